//! The coordinator's catalog on disk: graphs, partitions and jobs (spec and status) in an
//! embedded database, `catalog.redb` in the work dir ([redb](https://docs.rs/redb), one
//! file, ACID commits), so a restarted coordinator lists and serves what it had.
//!
//! Each record is one JSON value under its id in one of three tables. A write commits
//! durably before the call that made it returns. Only one coordinator may open a work dir
//! at a time (redb locks the file).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::catalog::{GraphEntry, JobSpec, JobState, JobStatus, PartitionEntry};
use crate::error::{Result, RuntimeError};

const GRAPHS: TableDefinition<&str, &[u8]> = TableDefinition::new("graphs");
const PARTITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("partitions");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// A job as stored: what [`crate::catalog::JobRecord`] holds, minus its watchers.
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct StoredJob {
    pub id: String,
    pub seq: u64,
    pub spec: JobSpec,
    pub out_dir: PathBuf,
    pub status: JobStatus,
}

/// Everything a store held when it was opened.
pub(crate) struct Loaded {
    pub graphs: Vec<GraphEntry>,
    pub partitions: Vec<PartitionEntry>,
    /// In submission order.
    pub jobs: Vec<StoredJob>,
}

pub(crate) struct Store {
    db: Database,
    path: PathBuf,
}

#[derive(Clone, Copy)]
pub(crate) enum Table {
    Graphs,
    Partitions,
    Jobs,
}

impl Table {
    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Graphs => GRAPHS,
            Table::Partitions => PARTITIONS,
            Table::Jobs => JOBS,
        }
    }
}

impl Store {
    /// Opens (or creates) `catalog.redb` in `work_dir`, creating the directory.
    pub fn open(work_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(work_dir).map_err(|e| {
            RuntimeError::InvalidArgument(format!("work dir {}: {e}", work_dir.display()))
        })?;
        let path = work_dir.join("catalog.redb");
        let db = Database::create(&path).map_err(|e| {
            let hint = match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    " (another coordinator is using this work dir)"
                }
                _ => "",
            };
            RuntimeError::InvalidArgument(format!("catalog {}: {e}{hint}", path.display()))
        })?;
        let store = Store { db, path };
        // Create the tables, so reads of a new store find them.
        store.write(|tx| {
            for t in [Table::Graphs, Table::Partitions, Table::Jobs] {
                tx.open_table(t.definition()).map_err(|e| store.error(e))?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    fn error(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Store(format!("catalog {}: {e}", self.path.display()))
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.error(e))?;
        f(&tx)?;
        tx.commit().map_err(|e| self.error(e))
    }

    /// Stores `value` under `id` (replacing what was there).
    pub fn put<T: Serialize>(&self, table: Table, id: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.error(e))?;
        self.write(|tx| {
            tx.open_table(table.definition())
                .and_then(|mut t| t.insert(id, bytes.as_slice()).map(drop).map_err(Into::into))
                .map_err(|e| self.error(e))
        })
    }

    pub fn remove(&self, table: Table, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.open_table(table.definition())
                .and_then(|mut t| t.remove(id).map(drop).map_err(Into::into))
                .map_err(|e| self.error(e))
        })
    }

    pub fn put_job(
        &self,
        id: &str,
        seq: u64,
        spec: &JobSpec,
        out_dir: &Path,
        status: &JobStatus,
    ) -> Result<()> {
        #[derive(Serialize)]
        struct Ref<'a> {
            id: &'a str,
            seq: u64,
            spec: &'a JobSpec,
            out_dir: &'a Path,
            status: &'a JobStatus,
        }
        self.put(
            Table::Jobs,
            id,
            &Ref {
                id,
                seq,
                spec,
                out_dir,
                status,
            },
        )
    }

    fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>> {
        let tx = self.db.begin_read().map_err(|e| self.error(e))?;
        let t = tx
            .open_table(table.definition())
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.error(e))? {
            let (key, value) = row.map_err(|e| self.error(e))?;
            out.push(serde_json::from_slice(value.value()).map_err(|e| {
                self.error(format!("record '{}' cannot be read: {e}", key.value()))
            })?);
        }
        Ok(out)
    }

    pub fn load(&self) -> Result<Loaded> {
        let mut jobs: Vec<StoredJob> = self.all(Table::Jobs)?;
        jobs.sort_by_key(|j| j.seq);
        Ok(Loaded {
            graphs: self.all(Table::Graphs)?,
            partitions: self.all(Table::Partitions)?,
            jobs,
        })
    }
}

/// What a job that had not ended when its coordinator stopped becomes on reload.
pub(crate) fn interrupted(status: &mut JobStatus) {
    if !status.state.is_terminal() {
        status.error = format!(
            "the coordinator stopped while the job was {}; submit it again",
            match status.state {
                JobState::Queued => "queued",
                JobState::Partitioning => "partitioning",
                _ => "running",
            }
        );
        status.state = JobState::Failed;
    }
}
