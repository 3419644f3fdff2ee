//! Identity (issue 9, DESIGN §12): JWTs verified with jsonwebtoken (HS256 secret, RS256 keys
//! from a PEM file, ES256 keys from a JWKS file), service API keys stored as SHA-256 with roles
//! and `act_as`, and dev mode refused on the network. Every case goes through a real gRPC client.
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use replyflow::{config::Secret, proto::pb};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::{Code, Request};

use crate::helpers::{TestApp, expense_vars, spawn_app_with};

const SECRET: &str = "an HS256 secret of at least 32 bytes, for tests only";
const ISSUER: &str = "https://sso.corp.example";
const AUDIENCE: &str = "replyflow";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims of a token for `sub` that the test server accepts; tests change one thing each.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now()})
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

fn with_header<T>(mut request: Request<T>, name: &'static str, value: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert(name, value.parse().expect("ascii header"));
    request
}

async fn jwt_app(configure: impl FnOnce(&mut replyflow::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.security.auth = "jwt".into();
        s.security.jwt_hs256_secret = Some(Secret::new(SECRET));
        s.security.jwt_issuer = Some(ISSUER.into());
        s.security.jwt_audience = Some(AUDIENCE.into());
        configure(s);
    })
    .await
}

/// ListTasks with these request headers: Ok, or the status code.
async fn list_tasks(app: &TestApp, request: Request<pb::ListTasksRequest>) -> Result<(), Code> {
    app.tasks()
        .list_tasks(request)
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

#[tokio::test]
async fn a_forged_expired_early_or_misaddressed_jwt_is_refused() {
    let app = jwt_app(|_| {}).await;
    let ok = hs256(&claims("mary"), SECRET);
    assert_eq!(
        list_tasks(&app, bearer(Default::default(), &ok)).await,
        Ok(())
    );

    let mut expired_in_leeway = claims("mary");
    expired_in_leeway["exp"] = json!(now() - 30);
    assert_eq!(
        list_tasks(
            &app,
            bearer(Default::default(), &hs256(&expired_in_leeway, SECRET))
        )
        .await,
        Ok(()),
        "60 s of clock skew are allowed"
    );

    let mut cases: Vec<(&str, String)> = vec![
        (
            "signed with another secret",
            hs256(&claims("mary"), "another secret of at least 32 bytes....."),
        ),
        ("not a JWT", "not.a.jwt".into()),
    ];
    for (what, change) in [
        ("expired", json!({"exp": now() - 120})),
        ("not yet valid", json!({"nbf": now() + 120})),
        ("another issuer", json!({"iss": "https://evil.example"})),
        ("another audience", json!({"aud": "payroll"})),
        ("without a subject", json!({"sub": null})),
        ("without an issuer", json!({"iss": null})),
        ("without an audience", json!({"aud": null})),
        ("an audience that is a number", json!({"aud": 5})),
        ("an issuer that is a number", json!({"iss": 5})),
        (
            "a not-before that is a string",
            json!({"nbf": "99999999999"}),
        ),
    ] {
        let mut c = claims("mary");
        for (k, v) in change.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        cases.push((what, hs256(&c, SECRET)));
    }
    // alg=none: a header and claims with an empty signature.
    let none_header = BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let none_claims = BASE64URL_NOPAD.encode(claims("admin").to_string().as_bytes());
    cases.push(("alg none", format!("{none_header}.{none_claims}.")));
    for (what, token) in cases {
        assert_eq!(
            list_tasks(&app, bearer(Default::default(), &token)).await,
            Err(Code::Unauthenticated),
            "{what}"
        );
    }
    // In jwt mode x-user-id is not an identity.
    let dev_header = with_header(Request::new(Default::default()), "x-user-id", "admin");
    assert_eq!(
        list_tasks(&app, dev_header).await,
        Err(Code::Unauthenticated)
    );
}

#[tokio::test]
async fn roles_come_from_the_tokens_roles_claim() {
    let app = jwt_app(|s| s.security.jwt_roles_claim = "groups".into()).await;
    let xml = std::fs::read(crate::helpers::repo_path("examples/expense.bpmn")).expect("example");
    let deploy = |token: String| {
        let app = &app;
        let xml = xml.clone();
        async move {
            app.workflow()
                .deploy_definition(bearer(
                    pb::DeployDefinitionRequest {
                        bpmn_xml: xml,
                        request_id: String::new(),
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().version)
                .map_err(|s| s.code())
        }
    };
    assert_eq!(
        deploy(hs256(&claims("mary"), SECRET)).await,
        Err(Code::PermissionDenied)
    );
    let mut deployer = claims("mary");
    deployer["groups"] = json!(["staff", "deployer"]);
    assert_eq!(deploy(hs256(&deployer, SECRET)).await, Ok(1));
}

#[tokio::test]
async fn rs256_keys_from_a_pem_file_and_es256_keys_from_a_jwks_file_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    // RS256: a key pair made by openssl for this test only.
    let rsa_private = dir.path().join("rsa.pem");
    let rsa_public = dir.path().join("rsa.pub.pem");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            rsa_private.to_str().expect("utf-8 path"),
        ],
        vec![
            "pkey",
            "-in",
            rsa_private.to_str().expect("utf-8 path"),
            "-pubout",
            "-out",
            rsa_public.to_str().expect("utf-8 path"),
        ],
    ] {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl runs (Debian's openssl package)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    // ES256: a P-256 key made with rcgen; its public point goes into a JWKS.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let point = ec.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": BASE64URL_NOPAD.encode(&point[1..33]), "y": BASE64URL_NOPAD.encode(&point[33..]),
    }]});
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).expect("write jwks");

    let app = spawn_app_with(|s| {
        s.security.auth = "jwt".into();
        s.security.jwt_issuer = Some(ISSUER.into());
        s.security.jwt_audience = Some(AUDIENCE.into());
        s.security.jwt_public_keys = Some(rsa_public.display().to_string());
        s.security.jwt_jwks_file = Some(jwks_file.display().to_string());
    })
    .await;
    let rsa_key = EncodingKey::from_rsa_pem(&std::fs::read(&rsa_private).expect("rsa key"))
        .expect("rsa encoding key");
    let rs256 = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims("mary"), &rsa_key)
        .expect("rs256");
    assert_eq!(
        list_tasks(&app, bearer(Default::default(), &rs256)).await,
        Ok(())
    );

    let ec_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec encoding key");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let es256 = jsonwebtoken::encode(&header, &claims("mary"), &ec_key).expect("es256");
    assert_eq!(
        list_tasks(&app, bearer(Default::default(), &es256)).await,
        Ok(())
    );

    // An HS256 token "signed" with the RSA public key (the algorithm-confusion attack).
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("admin"),
        &EncodingKey::from_secret(&std::fs::read(&rsa_public).expect("public key")),
    )
    .expect("hs256");
    assert_eq!(
        list_tasks(&app, bearer(Default::default(), &confused)).await,
        Err(Code::Unauthenticated)
    );
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let forged = jsonwebtoken::encode(
        &header,
        &claims("mary"),
        &EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).expect("key"),
    )
    .expect("es256");
    assert_eq!(
        list_tasks(&app, bearer(Default::default(), &forged)).await,
        Err(Code::Unauthenticated)
    );
}

fn key<T>(message: T, key: &str) -> Request<T> {
    with_header(Request::new(message), "x-api-key", key)
}

fn code<T>(result: Result<T, tonic::Status>) -> Result<(), Code> {
    result.map(|_| ()).map_err(|s| s.code())
}

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn api_keys_carry_their_roles_and_act_as_only_with_that_role() {
    let app = spawn_app_with(|s| {
        s.security.api_keys = replyflow::config::ApiKeysSetting::Json(
            json!([
                {"id": "mta", "sha256": sha256_hex("mta-secret-key"), "roles": ["mail"]},
                {"id": "oa-backend", "sha256": sha256_hex("oa-secret-key"), "roles": ["act_as"]},
            ])
            .to_string(),
        );
    })
    .await;
    app.deploy_example("expense.bpmn").await;
    for user in ["initiator", "mary", "fred"] {
        app.add_user(user, "").await;
    }
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = &instance.open_tasks[0];

    let mail = pb::SubmitInboundEmailRequest {
        raw: b"From: nobody@example.org\r\nSubject: hi\r\nMessage-ID: <k1@example.org>\r\n\r\nhello\r\n"
            .to_vec(),
        ..Default::default()
    };
    app.approvals()
        .submit_inbound_email(key(mail.clone(), "mta-secret-key"))
        .await
        .expect("the MTA's key submits mail");
    assert_eq!(
        code(
            app.approvals()
                .submit_inbound_email(key(mail.clone(), "guessed-key"))
                .await
        ),
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        code(
            app.approvals()
                .submit_inbound_email(key(mail, "oa-secret-key"))
                .await
        ),
        Err(Code::PermissionDenied),
        "the OA backend's key has no mail role"
    );

    // The OA backend acts for mary: mary's rights, so she decides her own task.
    let complete = pb::CompleteTaskRequest {
        task_id: task.id.clone(),
        outcome: "approve".into(),
        ..Default::default()
    };
    let as_mary = with_header(key(complete.clone(), "oa-secret-key"), "x-act-as", "mary");
    let done = app
        .tasks()
        .complete_task(as_mary)
        .await
        .expect("act_as mary completes mary's task")
        .into_inner();
    assert_eq!(done.task.expect("task").completed_by, "mary");
    // Acting for an admin gives the key no admin rights: only roles the key holds itself.
    let xml = std::fs::read(crate::helpers::repo_path("examples/expense.bpmn")).expect("example");
    let deploy = pb::DeployDefinitionRequest {
        bpmn_xml: xml,
        request_id: String::new(),
    };
    assert_eq!(
        code(
            app.workflow()
                .deploy_definition(with_header(
                    key(deploy, "oa-secret-key"),
                    "x-act-as",
                    "admin"
                ))
                .await
        ),
        Err(Code::PermissionDenied),
        "an act_as key naming the admin"
    );
    // A key without act_as cannot name a user.
    let status = app
        .tasks()
        .complete_task(with_header(
            key(complete, "mta-secret-key"),
            "x-act-as",
            "fred",
        ))
        .await
        .expect_err("the MTA's key acts for fred");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[test]
fn dev_mode_refuses_a_network_listener_unless_told_and_bad_jwt_settings_are_named() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let err = replyflow::config::Settings::load_from(
        None,
        env(&[("REPLYFLOW_SERVER_LISTEN", "0.0.0.0:50051")]),
    )
    .expect_err("dev mode on 0.0.0.0");
    assert!(format!("{err:#}").contains("security.auth"), "{err:#}");
    replyflow::config::Settings::load_from(
        None,
        env(&[
            ("REPLYFLOW_SERVER_LISTEN", "0.0.0.0:50051"),
            ("REPLYFLOW_SECURITY_ALLOW_DEV_ON_NETWORK", "true"),
        ]),
    )
    .expect("allowed explicitly");
    for (pairs, key) in [
        (
            vec![("REPLYFLOW_SECURITY_AUTH", "jwt")],
            "security.auth = jwt needs",
        ),
        (
            vec![
                ("REPLYFLOW_SECURITY_AUTH", "jwt"),
                (
                    "REPLYFLOW_SECURITY_JWT_HS256_SECRET",
                    "a secret of at least thirty-two bytes",
                ),
            ],
            "security.jwt_issuer: required",
        ),
        (
            vec![
                ("REPLYFLOW_SECURITY_AUTH", "jwt"),
                ("REPLYFLOW_SECURITY_JWT_HS256_SECRET", "short"),
            ],
            "security.jwt_hs256_secret",
        ),
        (
            vec![
                ("REPLYFLOW_SECURITY_AUTH", "jwt"),
                ("REPLYFLOW_SECURITY_JWT_JWKS_FILE", "/nonexistent/jwks.json"),
            ],
            "security.jwt_jwks_file",
        ),
        (
            vec![(
                "REPLYFLOW_SECURITY_API_KEYS",
                r#"[{"id":"x","sha256":"abc","roles":[]}]"#,
            )],
            "security.api_keys[0].sha256",
        ),
        (
            vec![(
                "REPLYFLOW_SECURITY_API_KEYS",
                r#"[{"id":"x","sha256":"0000000000000000000000000000000000000000000000000000000000000000","roles":["root"]}]"#,
            )],
            "security.api_keys[0].roles",
        ),
        (vec![("REPLYFLOW_SECURITY_AUTH", "ldap")], "security.auth"),
    ] {
        let err = replyflow::config::Settings::load_from(None, env(&pairs))
            .expect_err("bad security settings");
        assert!(format!("{err:#}").contains(key), "{key}: {err:#}");
    }
}
