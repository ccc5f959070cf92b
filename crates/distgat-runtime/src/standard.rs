//! The standard gRPC services every distgat server carries: `grpc.health.v1` (so load
//! balancers, Kubernetes probes and grpcurl can check it) and server reflection, v1 and
//! v1alpha (grpcurl uses v1; grpcio's Python reflection client still speaks v1alpha).

use distgat_proto::FILE_DESCRIPTOR_SET;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::error::{Result, RuntimeError};

/// Health (for `service` and the whole server, "") and reflection routes. `serving` is the
/// initial status of both names. Reflection lists `served` (the distgat services this
/// server really has, not every service in the .proto) and the health service.
pub(crate) async fn standard_routes(
    service: &str,
    served: &[&str],
    serving: bool,
) -> Result<(HealthReporter, Routes)> {
    let (mut reporter, health) = tonic_health::server::health_reporter();
    set_serving(&mut reporter, service, serving).await;
    let reflection = || {
        served.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health"),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let invalid = |e: tonic_reflection::server::Error| {
        RuntimeError::Io(std::io::Error::other(format!(
            "reflection descriptors: {e}"
        )))
    };
    let v1 = reflection().build_v1().map_err(invalid)?;
    let v1alpha = reflection().build_v1alpha().map_err(invalid)?;
    Ok((
        reporter,
        Routes::new(health).add_service(v1).add_service(v1alpha),
    ))
}

pub(crate) async fn set_serving(reporter: &mut HealthReporter, service: &str, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter.set_service_status(service, status).await;
}
