//! What generic gRPC tooling sees: health checks, server reflection (v1 and v1alpha, so that both
//! current and older grpcurl / Postman / language clients can discover the API), ReminderService
//! answering, and gRPC-Web over plain HTTP/1.1 so that a
//! browser can call the server without a proxy.
use std::time::Duration;

use prost::Message;
use replyflow::proto::pb;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{req, spawn_app};

/// The services a client must be able to discover by reflection.
const DISCOVERABLE: &[&str] = &[
    "replyflow.v1.WorkflowService",
    "replyflow.v1.TaskService",
    "replyflow.v1.ApprovalService",
    "replyflow.v1.ReminderService",
    "replyflow.v1.DirectoryService",
    "grpc.health.v1.Health",
];

#[tokio::test]
async fn health_reports_the_server_and_the_workflow_service_as_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "replyflow.v1.WorkflowService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("Health/Check {service:?}: {status:?}"))
            .into_inner();
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "Health/Check {service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("an unknown service has no health status");
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

/// Reflection v1: what grpcurl, Postman and current gRPC libraries use.
mod reflection_v1 {
    pub(super) use tonic_reflection::pb::v1::{
        ServerReflectionRequest, ServerReflectionResponse,
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
}

/// Reflection v1alpha: what older tools still send.
mod reflection_v1alpha {
    pub(super) use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, ServerReflectionResponse,
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
}

/// Sends one request on the bidirectional reflection stream and returns the one answer. The two
/// protocol versions have the same shape but different generated types, hence the macro.
macro_rules! reflect {
    ($version:ident, $channel:expr, $request:expr) => {{
        use $version::*;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some($request),
        };
        let mut client = ServerReflectionClient::new($channel);
        let mut answers = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect(concat!(stringify!($version), ": ServerReflectionInfo"))
            .into_inner();
        let answer: ServerReflectionResponse = answers
            .message()
            .await
            .expect(concat!(stringify!($version), ": reading the answer"))
            .expect(concat!(stringify!($version), ": one answer"));
        match answer.message_response {
            Some(MessageResponse::ErrorResponse(error)) => panic!(
                "{}: reflection error {}: {}",
                stringify!($version),
                error.error_code,
                error.error_message
            ),
            Some(other) => other,
            None => panic!("{}: an empty answer", stringify!($version)),
        }
    }};
}

/// The service list and the file of WorkflowService, through one reflection version.
macro_rules! check_reflection {
    ($version:ident, $channel:expr) => {{
        use $version::*;
        let listed = match reflect!(
            $version,
            $channel,
            MessageRequest::ListServices(String::new())
        ) {
            MessageResponse::ListServicesResponse(list) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("{}: ListServices answered {other:?}", stringify!($version)),
        };
        for service in DISCOVERABLE {
            assert!(
                listed.iter().any(|name| name == service),
                "{}: {service} missing from {listed:?}",
                stringify!($version)
            );
        }
        let files = match reflect!(
            $version,
            $channel,
            MessageRequest::FileContainingSymbol("replyflow.v1.WorkflowService".into())
        ) {
            MessageResponse::FileDescriptorResponse(files) => files.file_descriptor_proto,
            other => panic!(
                "{}: FileContainingSymbol answered {other:?}",
                stringify!($version)
            ),
        };
        assert_declares_workflow_service(stringify!($version), &files);
    }};
}

/// The answer carries the file that declares WorkflowService with its RPCs.
fn assert_declares_workflow_service(version: &str, files: &[Vec<u8>]) {
    assert!(!files.is_empty(), "{version}: no file descriptor returned");
    let decoded: Vec<prost_types::FileDescriptorProto> = files
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .unwrap_or_else(|err| panic!("{version}: not a FileDescriptorProto: {err}"))
        })
        .collect();
    let service = decoded
        .iter()
        .filter(|file| file.package() == "replyflow.v1")
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "WorkflowService")
        .unwrap_or_else(|| {
            let names: Vec<&str> = decoded.iter().map(|f| f.name()).collect();
            panic!("{version}: WorkflowService is declared in none of {names:?}")
        });
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for rpc in ["DeployDefinition", "StartProcess", "GetProcessInstance"] {
        assert!(
            methods.contains(&rpc),
            "{version}: {rpc} missing from {methods:?}"
        );
    }
}

/// What a reflection v1 client sees on `channel`: every service and WorkflowService's file (also
/// used over TLS, tests/api/tls.rs).
pub(crate) async fn assert_reflection_v1_works(channel: tonic::transport::Channel) {
    check_reflection!(reflection_v1, channel.clone());
}

#[tokio::test]
async fn reflection_v1_lists_every_service_and_serves_their_descriptors() {
    let app = spawn_app().await;
    assert_reflection_v1_works(app.channel.clone()).await;
    app.stop().await;
}

#[tokio::test]
async fn reflection_v1alpha_lists_every_service_and_serves_their_descriptors() {
    let app = spawn_app().await;
    check_reflection!(reflection_v1alpha, app.channel.clone());
    app.stop().await;
}

/// ReminderService is served: a caller with an empty inbox gets an empty list and a zero badge
/// (no longer UNIMPLEMENTED).
#[tokio::test]
async fn reminder_service_answers() {
    let app = spawn_app().await;
    let mut reminders =
        pb::reminder_service_client::ReminderServiceClient::new(app.channel.clone());
    let inbox = reminders
        .list_messages(req(pb::ListMessagesRequest::default(), "admin"))
        .await
        .expect("ListMessages is served")
        .into_inner();
    assert!(inbox.messages.is_empty());
    assert_eq!(inbox.unread_count, 0);
    app.stop().await;
}

/// One HTTP/1.1 response, read off the wire.
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// POSTs a gRPC-Web call over a raw TCP connection, as a browser's fetch would, and reads the
/// response until the server closes the connection (`Connection: close`).
async fn grpc_web_call(
    addr: std::net::SocketAddr,
    path: &str,
    user: &str,
    message: &impl Message,
) -> HttpResponse {
    let stream = TcpStream::connect(addr).await.expect("connecting");
    grpc_web_call_over(stream, addr, path, user, message).await
}

/// [`grpc_web_call`] over a connection the caller opened (e.g. TLS, tests/api/tls.rs).
pub(crate) async fn grpc_web_call_over(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    addr: std::net::SocketAddr,
    path: &str,
    user: &str,
    message: &impl Message,
) -> HttpResponse {
    let payload = message.encode_to_vec();
    let mut body = Vec::with_capacity(5 + payload.len());
    body.push(0u8); // data frame, uncompressed
    body.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&payload);
    let head = format!(
        "POST {path} HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Content-Type: application/grpc-web+proto\r\n\
         Accept: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\n\
         X-User-Id: {user}\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        body.len()
    );
    let exchange = async {
        stream.write_all(head.as_bytes()).await.expect("writing");
        stream.write_all(&body).await.expect("writing");
        stream.flush().await.expect("flushing");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("reading");
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the gRPC-Web response within 20 s (the server must close the connection)");
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("chunk size {size_text:?}"));
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        assert!(rest.len() >= size + 2, "truncated chunk");
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// A gRPC-Web body: data frames (flag 0x00) and one trailer frame (flag 0x80) of
/// `name: value\r\n` lines.
pub(crate) fn grpc_web_frames(mut body: &[u8]) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let mut messages = Vec::new();
    let mut trailers = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "a truncated frame header: {body:?}");
        let flag = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        assert!(body.len() >= 5 + len, "a truncated frame");
        let frame = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.extend(
                String::from_utf8_lossy(frame)
                    .split("\r\n")
                    .filter_map(|line| line.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())),
            );
        } else {
            assert_eq!(flag, 0, "unexpected frame flag (compressed?)");
            messages.push(frame.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

/// A gRPC trailer of a gRPC-Web response: in the trailer frame at the end of the body, or in the
/// headers of a trailers-only response (both are valid gRPC-Web and browsers read either; tonic
/// answers an error without a message as trailers-only).
pub(crate) fn grpc_web_trailer(
    response: &HttpResponse,
    trailers: &[(String, String)],
    name: &str,
) -> Option<String> {
    trailers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .or_else(|| response.header(name).map(str::to_string))
}

#[tokio::test]
async fn a_browser_can_call_the_server_with_grpc_web_over_http1() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let path = "/replyflow.v1.DirectoryService/GetUser";

    let found = grpc_web_call(
        app.addr,
        path,
        "admin",
        &pb::GetUserRequest { id: "mary".into() },
    )
    .await;
    assert_eq!(found.status, 200, "headers {:?}", found.headers);
    let content_type = found.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/grpc-web"),
        "content-type {content_type:?}"
    );
    let (messages, trailers) = grpc_web_frames(&found.body);
    assert_eq!(
        grpc_web_trailer(&found, &trailers, "grpc-status").as_deref(),
        Some("0"),
        "trailers {trailers:?}, headers {:?}",
        found.headers
    );
    assert!(
        trailers.iter().any(|(n, _)| n == "grpc-status"),
        "a successful call ends its body with a grpc-status trailer frame: {trailers:?}"
    );
    assert_eq!(messages.len(), 1, "one User message");
    let user = pb::User::decode(messages[0].as_slice()).expect("a User");
    assert_eq!(
        (user.id.as_str(), user.email.as_str()),
        ("mary", "mary@example.com")
    );

    let missing = grpc_web_call(
        app.addr,
        path,
        "admin",
        &pb::GetUserRequest {
            id: "nobody".into(),
        },
    )
    .await;
    assert_eq!(missing.status, 200, "headers {:?}", missing.headers);
    let (messages, trailers) = grpc_web_frames(&missing.body);
    assert!(messages.is_empty(), "no message for an unknown user");
    assert_eq!(
        grpc_web_trailer(&missing, &trailers, "grpc-status").as_deref(),
        Some("5"),
        "NOT_FOUND expected; trailers {trailers:?}, headers {:?}",
        missing.headers
    );
    let message = grpc_web_trailer(&missing, &trailers, "grpc-message").unwrap_or_default();
    assert!(message.contains("nobody"), "grpc-message {message:?}");
    app.stop().await;
}
