//! What a gRPC caller hears when the store fails: the code says the service is unavailable,
//! the message says nothing of the database.

use std::sync::Arc;

use firebreak_orchestration::{Options, Orchestration};
use firebreak_proto::v1::{self, runbook_service_client::RunbookServiceClient};
use firebreak_storage::OrchestrationStore;
use firebreak_storage::sqlite::SqliteOrchestrationStore;
use tokio_util::sync::CancellationToken;

use crate::harness::{RecordingBus, catalog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_reaches_the_caller_as_unavailable_without_its_text() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("orchestration.db");
    let store: Arc<dyn OrchestrationStore> =
        Arc::new(SqliteOrchestrationStore::open(&path, false).await.unwrap());
    let runbooks = tempfile::tempdir().unwrap();
    let orch = Orchestration::new(
        store,
        Arc::new(RecordingBus::default()),
        catalog(runbooks.path()),
        Options::default(),
    )
    .unwrap();
    // A real failure of the real database: its table is gone under the running service.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE runs")
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(orch.grpc())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.clone().cancelled_owned(),
            ),
    );
    let mut client = RunbookServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let status = client
        .get_run(v1::GetRunRequest {
            id: firebreak_domain::new_id().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let message = status.message();
    assert!(
        !message.contains("runs") && !message.contains("table") && !message.contains("database"),
        "{message}"
    );
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
