//! Edge input formats. Every reader returns an [`EdgeList`] in PyG's convention: edge `k`
//! goes from `src()[k]` to `dst()[k]` (a message flows source -> target) and the edges keep
//! the order in which the file lists them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::error::{GraphError, Result};
use crate::npy::NpyBody;

/// Graph file formats, chosen from the file extension unless given explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// `.npy` int64/int32 `[2, E]` edge index (row 0 = source, row 1 = target).
    Npy,
    /// Text edge list: one `src dst` pair per line, whitespace or comma separated.
    EdgeList,
    /// METIS `.graph`: 1-based adjacency lists.
    Metis,
    /// Matrix Market coordinate `.mtx`: entry (i, j) is the edge i -> j.
    MatrixMarket,
}

impl GraphFormat {
    pub const NAMES: &'static str = "npy, edgelist, metis, mtx";

    /// The canonical name, which [`GraphFormat::from_name`] reads back.
    pub fn name(self) -> &'static str {
        match self {
            GraphFormat::Npy => "npy",
            GraphFormat::EdgeList => "edgelist",
            GraphFormat::Metis => "metis",
            GraphFormat::MatrixMarket => "mtx",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "npy" => Ok(GraphFormat::Npy),
            "edgelist" | "txt" | "tsv" | "csv" | "el" | "edges" => Ok(GraphFormat::EdgeList),
            "metis" | "graph" => Ok(GraphFormat::Metis),
            "mtx" | "matrixmarket" => Ok(GraphFormat::MatrixMarket),
            other => Err(GraphError::argument(
                "--format",
                format!(
                    "unknown graph format '{other}': expected one of {}",
                    Self::NAMES
                ),
            )),
        }
    }

    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "npy" => Ok(GraphFormat::Npy),
            "txt" | "tsv" | "csv" | "el" | "edges" => Ok(GraphFormat::EdgeList),
            "graph" => Ok(GraphFormat::Metis),
            "mtx" => Ok(GraphFormat::MatrixMarket),
            _ => Err(GraphError::argument(
                path.display().to_string(),
                format!(
                    "cannot tell the graph format from the extension '{ext}' (known: .npy, \
                     .txt, .tsv, .csv, .el, .edges, .graph, .mtx); pass --format ({})",
                    Self::NAMES
                ),
            )),
        }
    }
}

/// Directed edges in file order, with 64-bit node ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeList {
    /// Sources then targets: `ids[..E]` are sources, `ids[E..]` targets (the memory
    /// layout of a C-order `[2, E]` edge index, so `.npy` input is used in place).
    ids: Vec<u64>,
    /// Nodes the file implies: max id + 1, or the node count a METIS or Matrix Market
    /// header declares (which may include isolated nodes).
    pub num_nodes: u64,
    /// Things the reader accepted but that the engine does not use (e.g. edge weights).
    pub warnings: Vec<String>,
    /// Whether `ids` were allocated in transparent huge pages (`.npy` input).
    ids_in_huge_pages: Placement,
}

/// Where a buffer's memory lies: not part of the value (always equal).
#[derive(Debug, Clone, Copy, Default)]
struct Placement(bool);

impl PartialEq for Placement {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Placement {}

impl EdgeList {
    /// Builds an edge list from parallel source and target arrays.
    pub fn from_pairs(src: &[u64], dst: &[u64]) -> Self {
        assert_eq!(
            src.len(),
            dst.len(),
            "source and target arrays differ in length"
        );
        let mut ids = Vec::with_capacity(src.len() * 2);
        ids.extend_from_slice(src);
        ids.extend_from_slice(dst);
        // Saturating: an id of u64::MAX then fails the id check instead of wrapping.
        let num_nodes = ids.iter().max().map_or(0, |&m| m.saturating_add(1));
        EdgeList {
            ids,
            num_nodes,
            warnings: Vec::new(),
            ids_in_huge_pages: Placement(false),
        }
    }

    fn from_split_ids(ids: Vec<u64>, declared_nodes: u64) -> Self {
        use rayon::prelude::*;
        let num_nodes = ids
            .par_iter()
            .max()
            .map_or(0, |&m| m.saturating_add(1))
            .max(declared_nodes);
        EdgeList {
            ids,
            num_nodes,
            warnings: Vec::new(),
            ids_in_huge_pages: Placement(false),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len() / 2
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn src(&self) -> &[u64] {
        &self.ids[..self.len()]
    }
    pub fn dst(&self) -> &[u64] {
        &self.ids[self.len()..]
    }

    /// Renames every node `v` to `new_of[v]`, in place and in parallel (a renumbering
    /// such as the inverse of [`crate::reorder::rcm_order`]): the edge order stays, and
    /// `num_nodes` becomes `new_of.len()`. Every id must be below `new_of.len()` (callers
    /// check the ids first, naming the file); an id beyond it panics.
    pub fn rename(&mut self, new_of: &[u32]) {
        use rayon::prelude::*;
        self.ids.par_chunks_mut(1 << 16).for_each(|piece| {
            for v in piece {
                *v = u64::from(new_of[*v as usize]);
            }
        });
        self.num_nodes = new_of.len() as u64;
    }

    /// The ids' memory (`[2 * E]`, sources then targets), for reuse once the edges are no
    /// longer needed, when it lies in transparent huge pages (an `.npy` edge index is read
    /// into them), so rows gathered at random can go there (`RowBuffer::spare_words` in
    /// distgat-attention); `None` for other inputs, whose 4 KiB pages would make such
    /// gathers miss the TLB.
    pub fn into_spare_ids(self) -> Option<Vec<u64>> {
        self.ids_in_huge_pages.0.then_some(self.ids)
    }

    /// Checks every id against the node count the graph is used with (usually the
    /// feature rows), naming the first offending edge.
    pub fn check_ids(&self, num_nodes: u64, path: &Path, node_count_source: &str) -> Result<()> {
        let e = self.len();
        if let Some(pos) = self.ids.iter().position(|&id| id >= num_nodes) {
            let (row, k) = if pos < e {
                ("source", pos)
            } else {
                ("target", pos - e)
            };
            let allowed = match num_nodes {
                0 => "there are no nodes, so no edge can be given".to_string(),
                n => format!("ids must be 0 to {}", n - 1),
            };
            return Err(GraphError::invalid(
                path,
                format!(
                    "edge {k}: {row} id {} is beyond the node count {num_nodes} given by \
                     {node_count_source} ({allowed})",
                    self.ids[pos]
                ),
            ));
        }
        Ok(())
    }
}

/// Reads a graph file in `format` (or the format its extension implies).
pub fn read_graph(path: &Path, format: Option<GraphFormat>) -> Result<EdgeList> {
    let format = match format {
        Some(f) => f,
        None => GraphFormat::from_path(path)?,
    };
    match format {
        GraphFormat::Npy => read_npy_edges(path),
        GraphFormat::EdgeList => read_text_edges(path),
        GraphFormat::Metis => read_metis(path),
        GraphFormat::MatrixMarket => read_matrix_market(path),
    }
}

fn read_npy_edges(path: &Path) -> Result<EdgeList> {
    let body = NpyBody::open(path)?;
    if body.shape.len() != 2 || body.shape[0] != 2 {
        return Err(GraphError::format(
            path,
            format!(
                "edge index must have shape [2, E] (row 0 = source, row 1 = target), found {:?}",
                body.shape
            ),
        ));
    }
    let e = body.shape[1] as usize;
    let negative = |pos: usize, value: i64, row: usize, k: usize| {
        debug_assert!(value < 0, "element {pos}");
        GraphError::invalid(
            path,
            format!(
                "edge {k}: negative {} id {value}",
                if row == 0 { "source" } else { "target" },
            ),
        )
    };
    if body.fortran_order {
        // Fortran order stores (src, dst) pairs interleaved.
        let raw = body.read_i64(path)?;
        if let Some(pos) = raw.iter().position(|&v| v < 0) {
            return Err(negative(pos, raw[pos], pos % 2, pos / 2));
        }
        let mut ids = vec![0u64; 2 * e];
        crate::npy::advise_huge_pages(bytemuck::cast_slice_mut(&mut ids));
        for (k, pair) in raw.chunks_exact(2).enumerate() {
            ids[k] = pair[0] as u64;
            ids[e + k] = pair[1] as u64;
        }
        let mut edges = EdgeList::from_split_ids(ids, 0);
        edges.ids_in_huge_pages = Placement(true);
        return Ok(edges);
    }
    // C order is already the layout of `EdgeList::ids` (sources, then targets): the body
    // is read straight into it, each piece checked for negative ids (the top bit of the
    // int64's bits) as it is read; into huge pages, for reuse as gathered rows
    // (`EdgeList::into_spare_ids`). Only int64 bodies on little-endian Unix are read
    // straight into the ids (others are converted element by element, into 4 KiB pages).
    let in_place =
        body.dtype == crate::npy::NpyDtype::I64 && cfg!(all(unix, target_endian = "little"));
    let ids = body
        .in_huge_pages()
        .read_i64_bits_checked(path, |first, piece| {
            match piece.iter().position(|&v| v >> 63 != 0) {
                None => Ok(()),
                Some(p) => {
                    let pos = first + p;
                    Err(negative(
                        pos,
                        piece[p] as i64,
                        pos / e.max(1),
                        pos % e.max(1),
                    ))
                }
            }
        })?;
    let mut edges = EdgeList::from_split_ids(ids, 0);
    edges.ids_in_huge_pages = Placement(in_place);
    Ok(edges)
}

/// Whether the file starts with the `.npy` magic string (`\x93NUMPY`).
fn starts_with_npy_magic(path: &Path) -> bool {
    let mut magic = [0u8; 6];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"\x93NUMPY")
}

/// The longest line a text input may have: 64 MiB (a METIS adjacency line of a node with
/// millions of neighbours fits; a file without line breaks is refused, not read into
/// memory whole).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Iterates the lines of a text file with 1-based line numbers.
fn for_each_line(path: &Path, mut f: impl FnMut(usize, &str) -> Result<bool>) -> Result<()> {
    let file = File::open(path).map_err(|e| GraphError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut number = 0usize;
    loop {
        line.clear();
        // At most MAX_LINE_BYTES + 1 bytes per line: a file without line breaks (a device
        // such as /dev/zero, or a binary file) is refused instead of filling memory.
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_line(&mut line)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    let npy = number == 0 && starts_with_npy_magic(path);
                    let hint = if npy {
                        ": the file is a .npy array (it starts with the npy magic), not text; \
                     read it with the npy format"
                    } else {
                        ""
                    };
                    GraphError::format(
                        path,
                        format!("line {}: not valid UTF-8 text{hint}", number + 1),
                    )
                } else {
                    GraphError::io(path, e)
                }
            })?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        if line.len() > MAX_LINE_BYTES {
            return Err(GraphError::format(
                path,
                format!(
                    "line {number}: longer than {} MiB without a line break; an edge list \
                     has one short line per edge (is this a binary file or a device?)",
                    MAX_LINE_BYTES >> 20
                ),
            ));
        }
        let text = line.trim_end_matches(['\n', '\r']);
        let text = if number == 1 {
            text.trim_start_matches('\u{feff}') // a UTF-8 byte order mark
        } else {
            text
        };
        if !f(number, text)? {
            return Ok(());
        }
    }
}

fn parse_id(path: &Path, line: usize, token: &str, what: &str) -> Result<u64> {
    token.parse::<u64>().map_err(|_| {
        GraphError::format(
            path,
            format!("line {line}: {what} '{token}' is not a non-negative integer"),
        )
    })
}

/// Parses a node id: ids must fit PyG's int64 `edge_index`.
fn parse_node_id(path: &Path, line: usize, token: &str, what: &str) -> Result<u64> {
    let id = parse_id(path, line, token, what)?;
    if id > i64::MAX as u64 {
        return Err(GraphError::invalid(
            path,
            format!("line {line}: {what} {id} is beyond the int64 range of node ids"),
        ));
    }
    Ok(id)
}

fn read_text_edges(path: &Path) -> Result<EdgeList> {
    let mut src = Vec::new();
    let mut dst = Vec::new();
    for_each_line(path, |number, line| {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('%') {
            return Ok(true);
        }
        // Comma-separated when the line has a comma (every field then non-empty: `0,,1`
        // is an error, not the edge 0 -> 1), else whitespace-separated.
        let fields: Vec<&str> = if trimmed.contains(',') {
            trimmed.split(',').map(str::trim).collect()
        } else {
            trimmed.split_whitespace().collect()
        };
        if let Some(empty) = fields.iter().position(|t| t.is_empty()) {
            return Err(GraphError::format(
                path,
                format!(
                    "line {number}: field {} is empty in '{trimmed}' (expected 'src,dst')",
                    empty + 1
                ),
            ));
        }
        let [a, b] = fields[..] else {
            return Err(GraphError::format(
                path,
                format!(
                    "line {number}: expected 2 fields 'src dst', found {}: '{trimmed}'",
                    fields.len()
                ),
            ));
        };
        src.push(parse_node_id(path, number, a, "source id")?);
        dst.push(parse_node_id(path, number, b, "target id")?);
        Ok(true)
    })?;
    src.append(&mut dst);
    Ok(EdgeList::from_split_ids(src, 0))
}

fn read_metis(path: &Path) -> Result<EdgeList> {
    // Header: n m [fmt [ncon]]; fmt digits: vertex sizes, vertex weights, edge weights.
    struct Header {
        n: u64,
        m: u64,
        has_sizes: bool,
        vertex_weights: usize,
        edge_weights: bool,
        line: usize,
    }
    let mut header: Option<Header> = None;
    let mut vertex = 0u64; // vertices read so far
    let mut src = Vec::new();
    let mut dst = Vec::new();
    let mut trailing: Option<usize> = None;
    for_each_line(path, |number, line| {
        if line.trim_start().starts_with('%') {
            return Ok(true);
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(h) = &header else {
            if tokens.is_empty() {
                return Ok(true);
            }
            if tokens.len() < 2 || tokens.len() > 4 {
                return Err(GraphError::format(
                    path,
                    format!(
                        "line {number}: METIS header must be 'n m [fmt [ncon]]', found '{}'",
                        line.trim()
                    ),
                ));
            }
            let n = parse_node_id(path, number, tokens[0], "vertex count")?;
            // Within int64 like the ids, so the adjacency entries `2 m` fit in a u64 (an
            // edge count near 2^64 overflowed; fuzz/README.md, bug 4).
            let m = parse_node_id(path, number, tokens[1], "edge count")?;
            let fmt = tokens.get(2).copied().unwrap_or("0");
            if fmt.len() > 3 || !fmt.chars().all(|c| c == '0' || c == '1') {
                return Err(GraphError::format(
                    path,
                    format!("line {number}: METIS fmt '{fmt}' must be up to 3 digits of 0/1"),
                ));
            }
            let fmt = format!("{fmt:0>3}");
            let flags: Vec<bool> = fmt.chars().map(|c| c == '1').collect();
            let ncon = match tokens.get(3) {
                Some(t) => parse_id(path, number, t, "ncon")? as usize,
                None => usize::from(flags[1]),
            };
            if ncon > 0 && !flags[1] {
                return Err(GraphError::format(
                    path,
                    format!("line {number}: ncon = {ncon} but fmt '{fmt}' has no vertex weights"),
                ));
            }
            header = Some(Header {
                n,
                m,
                has_sizes: flags[0],
                vertex_weights: if flags[1] { ncon.max(1) } else { 0 },
                edge_weights: flags[2],
                line: number,
            });
            return Ok(true);
        };
        if vertex == h.n {
            if !tokens.is_empty() {
                trailing = Some(number);
                return Ok(false);
            }
            return Ok(true);
        }
        vertex += 1;
        // ncon comes from the file: a huge one overflowed this sum (fuzz/README.md, bug 5); no
        // line has usize::MAX fields, so the saturated count is refused below.
        let skip = usize::from(h.has_sizes).saturating_add(h.vertex_weights);
        if tokens.len() < skip {
            return Err(GraphError::format(
                path,
                format!(
                    "line {number} (vertex {vertex}): expected {skip} vertex size/weight fields, found {}",
                    tokens.len()
                ),
            ));
        }
        for t in &tokens[..skip] {
            parse_id(path, number, t, "vertex size/weight")?;
        }
        let rest = &tokens[skip..];
        let stride = if h.edge_weights { 2 } else { 1 };
        if !rest.len().is_multiple_of(stride) {
            return Err(GraphError::format(
                path,
                format!(
                    "line {number} (vertex {vertex}): edge weights are on (fmt), so neighbours \
                     come in 'id weight' pairs, but {} fields remain",
                    rest.len()
                ),
            ));
        }
        for pair in rest.chunks(stride) {
            let u = parse_id(path, number, pair[0], "neighbour id")?;
            if u == 0 || u > h.n {
                return Err(GraphError::invalid(
                    path,
                    format!(
                        "line {number} (vertex {vertex}): neighbour {u} is outside 1..={}",
                        h.n
                    ),
                ));
            }
            if stride == 2 {
                parse_id(path, number, pair[1], "edge weight")?;
            }
            src.push(vertex - 1);
            dst.push(u - 1);
        }
        Ok(true)
    })?;
    let Some(h) = header else {
        return Err(GraphError::format(
            path,
            "empty METIS file: no header line 'n m'",
        ));
    };
    if let Some(line) = trailing {
        return Err(GraphError::format(
            path,
            format!(
                "line {line}: the header (line {}) declares {} vertices, but the file has more vertex lines",
                h.line, h.n
            ),
        ));
    }
    if vertex != h.n {
        return Err(GraphError::format(
            path,
            format!(
                "the header (line {}) declares {} vertices, but the file has only {vertex} vertex lines",
                h.line, h.n
            ),
        ));
    }
    if src.len() as u64 != 2 * h.m {
        return Err(GraphError::format(
            path,
            format!(
                "the header (line {}) declares {} undirected edges ({} adjacency entries), but \
                 the body lists {} adjacency entries",
                h.line,
                h.m,
                2 * h.m,
                src.len()
            ),
        ));
    }
    let mut warnings = Vec::new();
    if h.edge_weights {
        warnings.push(format!(
            "{}: edge weights read and ignored (GAT attention does not use edge weights)",
            path.display()
        ));
    }
    src.append(&mut dst);
    let mut edges = EdgeList::from_split_ids(src, h.n);
    edges.warnings = warnings;
    Ok(edges)
}

fn read_matrix_market(path: &Path) -> Result<EdgeList> {
    let mut banner_seen = false;
    let mut field = "pattern".to_string();
    let mut symmetric = false;
    let mut size: Option<(u64, u64, u64)> = None;
    let mut src = Vec::new();
    let mut dst = Vec::new();
    let mut entries = 0u64;
    let mut overflow_line = None;
    for_each_line(path, |number, line| {
        if !banner_seen {
            let tokens: Vec<String> = line
                .split_whitespace()
                .map(|t| t.to_ascii_lowercase())
                .collect();
            let ok = tokens.len() == 5 && tokens[0] == "%%matrixmarket" && tokens[1] == "matrix";
            if !ok {
                return Err(GraphError::format(
                    path,
                    format!(
                        "line {number}: expected the banner '%%MatrixMarket matrix coordinate \
                         <pattern|integer|real> <general|symmetric>', found '{}'",
                        line.trim()
                    ),
                ));
            }
            if tokens[2] != "coordinate" {
                return Err(GraphError::format(
                    path,
                    format!(
                        "line {number}: only 'coordinate' matrices are graphs, found '{}'",
                        tokens[2]
                    ),
                ));
            }
            field = match tokens[3].as_str() {
                f @ ("pattern" | "integer" | "real" | "double") => f.to_string(),
                other => {
                    return Err(GraphError::format(
                        path,
                        format!("line {number}: field '{other}' is not supported (pattern, integer or real)"),
                    ))
                }
            };
            symmetric = match tokens[4].as_str() {
                "general" => false,
                "symmetric" => true,
                other => {
                    return Err(GraphError::format(
                        path,
                        format!(
                        "line {number}: symmetry '{other}' is not supported (general or symmetric)"
                    ),
                    ))
                }
            };
            banner_seen = true;
            return Ok(true);
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('%') {
            return Ok(true);
        }
        let tokens: Vec<&str> = trimmed.split_whitespace().collect();
        let Some((rows, cols, nnz)) = size else {
            if tokens.len() != 3 {
                return Err(GraphError::format(
                    path,
                    format!("line {number}: expected the size line 'rows cols entries', found '{trimmed}'"),
                ));
            }
            size = Some((
                parse_node_id(path, number, tokens[0], "row count")?,
                parse_node_id(path, number, tokens[1], "column count")?,
                parse_id(path, number, tokens[2], "entry count")?,
            ));
            return Ok(true);
        };
        let pattern = field == "pattern";
        let want = if pattern { 2 } else { 3 };
        if tokens.len() != want {
            return Err(GraphError::format(
                path,
                format!(
                    "line {number}: expected {want} fields per entry, found {}: '{trimmed}'",
                    tokens.len()
                ),
            ));
        }
        if entries == nnz {
            overflow_line = Some(number);
            return Ok(false);
        }
        let i = parse_id(path, number, tokens[0], "row index")?;
        let j = parse_id(path, number, tokens[1], "column index")?;
        if i == 0 || i > rows || j == 0 || j > cols {
            return Err(GraphError::invalid(
                path,
                format!("line {number}: entry ({i}, {j}) is outside the {rows} x {cols} matrix (indices are 1-based)"),
            ));
        }
        let value_ok = match field.as_str() {
            "pattern" => true,
            "integer" => tokens[2].parse::<i64>().is_ok(),
            _ => tokens[2].parse::<f64>().is_ok(),
        };
        if !value_ok {
            return Err(GraphError::format(
                path,
                format!("line {number}: value '{}' is not {field}", tokens[2]),
            ));
        }
        entries += 1;
        src.push(i - 1);
        dst.push(j - 1);
        if symmetric && i != j {
            src.push(j - 1);
            dst.push(i - 1);
        }
        Ok(true)
    })?;
    if !banner_seen {
        return Err(GraphError::format(
            path,
            "empty file: no %%MatrixMarket banner",
        ));
    }
    let Some((rows, cols, nnz)) = size else {
        return Err(GraphError::format(
            path,
            "no size line 'rows cols entries' after the banner",
        ));
    };
    if let Some(line) = overflow_line {
        return Err(GraphError::format(
            path,
            format!("line {line}: more entries than the {nnz} the size line declares"),
        ));
    }
    if entries != nnz {
        return Err(GraphError::format(
            path,
            format!("the size line declares {nnz} entries, the file has {entries}"),
        ));
    }
    src.append(&mut dst);
    Ok(EdgeList::from_split_ids(src, rows.max(cols)))
}
