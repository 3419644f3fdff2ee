//! Thin tonic adapters: authenticate the caller (one interceptor), convert and validate the
//! request, call the use case, convert the answer. Errors become status codes in [`status`] only.
//! Health and reflection (v1 and v1alpha, for older grpcurl) are always served, and gRPC-Web is
//! accepted on the same port so browsers can call the server directly.
mod approval;
pub mod auth;
pub mod convert;
mod directory;
mod live_stream;
mod reminder;
mod reminder_runs;
pub mod status;
mod tasks;
pub mod tls;
mod workflow;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Server, server::TcpIncoming},
};

use crate::{proto::pb, workflow::Workflow};

/// Serves every service on `listener` until `shutdown` is cancelled, then lets calls in flight
/// finish. With `tls` (from `server.tls_*`) every connection is TLS first, gRPC-Web, health and
/// reflection included.
pub async fn serve(
    listener: TcpListener,
    workflow: Arc<Workflow>,
    authenticator: Arc<auth::Authenticator>,
    tls: Option<tls::ServerTls>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let authenticate = auth::Authenticate(authenticator);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building reflection v1")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building reflection v1alpha")?;

    let workflow_service = pb::workflow_service_server::WorkflowServiceServer::new(
        workflow::WorkflowApi::new(workflow.clone()),
    );
    let task_service = pb::task_service_server::TaskServiceServer::new(tasks::TaskApi::new(
        workflow.clone(),
        shutdown.clone(),
    ));
    let directory_service = pb::directory_service_server::DirectoryServiceServer::new(
        directory::DirectoryApi::new(workflow.clone()),
    );
    let approval_service = pb::approval_service_server::ApprovalServiceServer::new(
        approval::ApprovalApi::new(workflow.clone()),
    );
    let reminder_service = pb::reminder_service_server::ReminderServiceServer::new(
        reminder::ReminderApi::new(workflow.clone(), shutdown.clone()),
    );
    for name in [
        "replyflow.v1.WorkflowService",
        "replyflow.v1.TaskService",
        "replyflow.v1.DirectoryService",
        "replyflow.v1.ApprovalService",
        "replyflow.v1.ReminderService",
    ] {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }

    let router = Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(
            workflow_service,
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(task_service, authenticate.clone()))
        .add_service(InterceptedService::new(
            directory_service,
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            approval_service,
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            reminder_service,
            authenticate.clone(),
        ));
    let served = match tls {
        None => {
            // Builder::tcp_nodelay is ignored for an incoming stream: without NODELAY every
            // response waited ~40 ms for the client's delayed ACK (measured with `replyflow bench`).
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown.cancelled_owned())
                .await
        }
    };
    served.context("gRPC server")
}
