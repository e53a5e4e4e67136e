//! Users' HTTP and gRPC behaviour against the real service and a real store (SQLite, and
//! PostgreSQL when one is there).

use kit::config::Config;
use kit::service::Context;
use proto::users::users_client::UsersClient;
use proto::users::{CreateProfileRequest, GetProfileRequest};
use serde_json::{Value, json};

struct TestApp {
    base: String,
    admin: String,
    grpc: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: kit::service::Running,
}

async fn spawn_users(store: Option<&str>) -> TestApp {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let section = match store {
        Some(url) => json!({ "store": url }),
        None => json!({}),
    };
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("users", section);
    let service = users::build(Context::new("users", config).unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", service.public_addr());
    let admin = format!("http://{}", service.admin_addr());
    let grpc = format!("http://{}", service.grpc_addr().unwrap());
    TestApp {
        base,
        admin,
        grpc,
        http: reqwest::Client::new(),
        _dir: dir,
        _stop: service.spawn(),
    }
}

/// Who is calling: `(user id, roles)`, as the gateway would say it.
type Caller<'a> = Option<(&'a str, &'a str)>;

impl TestApp {
    async fn client(&self) -> UsersClient<tonic::transport::Channel> {
        UsersClient::connect(self.grpc.clone()).await.unwrap()
    }

    async fn create(&self, name: &str) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        self.client()
            .await
            .create_profile(CreateProfileRequest {
                user_id: id.clone(),
                email: format!("{name}@example.com"),
                name: name.into(),
            })
            .await
            .unwrap();
        id
    }

    fn with(&self, req: reqwest::RequestBuilder, caller: Caller<'_>) -> reqwest::RequestBuilder {
        match caller {
            Some((id, roles)) => req
                .header("x-flotilla-user-id", id)
                .header("x-flotilla-roles", roles),
            None => req,
        }
    }

    async fn get(&self, path: &str, caller: Caller<'_>) -> (u16, Value) {
        let req = self.with(self.http.get(format!("{}{path}", self.base)), caller);
        let res = req.send().await.unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    async fn patch(&self, body: Value, caller: Caller<'_>) -> (u16, Value) {
        let req = self.with(
            self.http.patch(format!("{}/api/users/me", self.base)),
            caller,
        );
        let res = req.json(&body).send().await.unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }
}

async fn me_and_rename(app: &TestApp) {
    let id = app.create("ada").await;
    let ada = Some((id.as_str(), "customer"));
    let (status, me) = app.get("/api/users/me", ada).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["name"], "ada");
    assert!(me["created_at"].as_str().unwrap().ends_with('Z'), "{me}");

    let (status, renamed) = app.patch(json!({"name": "  Ada Lovelace "}), ada).await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "Ada Lovelace");
    assert_eq!(renamed["email"], "ada@example.com");
    assert_eq!(
        app.get("/api/users/me", ada).await.1["name"],
        "Ada Lovelace"
    );
    let (status, same) = app.patch(json!({}), ada).await;
    assert_eq!((status, &same["name"]), (200, &json!("Ada Lovelace")));

    assert_eq!(app.get("/api/users/me", None).await.0, 401);
    let stranger = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        app.get("/api/users/me", Some((&stranger, "customer")))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn the_caller_reads_and_renames_their_profile() {
    me_and_rename(&spawn_users(None).await).await;
}

#[tokio::test]
async fn profiles_live_in_postgres_too() {
    use kit::store::testing::{Server, TestDatabase};
    let Some(db) = TestDatabase::create(Server::Postgres).await else {
        return;
    };
    {
        let app = spawn_users(Some(&db.url)).await;
        me_and_rename(&app).await;
        app._stop.stop().await;
    }
    db.drop_database().await;
}

#[tokio::test]
async fn patch_refuses_every_field_but_name_naming_it() {
    let app = spawn_users(None).await;
    let id = app.create("grace").await;
    let grace = Some((id.as_str(), "customer"));
    for (field, value) in [
        ("id", json!(uuid::Uuid::now_v7().to_string())),
        ("email", json!("mallory@example.com")),
        ("roles", json!(["admin"])),
        ("created_at", json!("2000-01-01T00:00:00Z")),
        ("updated_at", json!("2000-01-01T00:00:00Z")),
        ("is_admin", json!(true)),
    ] {
        let (status, problem) = app
            .patch(json!({"name": "Grace", field: value}), grace)
            .await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["type"], "urn:flotilla:problem:validation");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, vec![field], "{problem}");
    }
    let (status, problem) = app
        .patch(json!({"email": "x@y.z", "roles": ["admin"]}), grace)
        .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
    // Nothing was changed by any of them.
    let (_, me) = app.get("/api/users/me", grace).await;
    assert_eq!(
        (me["name"].as_str(), me["email"].as_str()),
        (Some("grace"), Some("grace@example.com"))
    );

    for bad in [json!({"name": ""}), json!({"name": "x".repeat(101)})] {
        let (status, problem) = app.patch(bad, grace).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
    }
    let (status, problem) = app.patch(json!({"name": 42}), grace).await;
    assert_eq!(status, 422, "{problem}");
    let res = app
        .http
        .patch(format!("{}/api/users/me", app.base))
        .header("x-flotilla-user-id", &id)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
}

#[tokio::test]
async fn only_an_administrator_reads_another_profile() {
    let app = spawn_users(None).await;
    let a = app.create("alice").await;
    let b = app.create("bob").await;
    let path = format!("/api/users/{b}");
    let (status, problem) = app.get(&path, Some((&a, "customer"))).await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem.get("email").is_none());
    assert_eq!(app.get(&path, None).await.0, 401);
    let (status, bob) = app.get(&path, Some(("root", "admin"))).await;
    assert_eq!(status, 200, "{bob}");
    assert_eq!(bob["email"], "bob@example.com");
    let unknown = format!("/api/users/{}", uuid::Uuid::now_v7());
    assert_eq!(app.get(&unknown, Some(("root", "admin"))).await.0, 404);
    assert_eq!(
        app.get("/api/users/not-a-uuid", Some(("root", "admin")))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn create_profile_is_idempotent_by_user_id() {
    let app = spawn_users(None).await;
    let mut c = app.client().await;
    let id = uuid::Uuid::now_v7().to_string();
    let req = |name: &str| CreateProfileRequest {
        user_id: id.clone(),
        email: "kim@example.com".into(),
        name: name.into(),
    };
    let first = c.create_profile(req("Kim")).await.unwrap().into_inner();
    let second = c.create_profile(req("Kim")).await.unwrap().into_inner();
    assert_eq!(first, second);
    let third = c
        .create_profile(req("Someone else"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third, first, "the first profile stays");
    let got = c
        .get_profile(GetProfileRequest {
            user_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, first);
    let missing = c
        .get_profile(GetProfileRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    for (bad, field) in [
        (
            CreateProfileRequest {
                user_id: "nope".into(),
                ..req("Kim")
            },
            "user_id",
        ),
        (
            CreateProfileRequest {
                email: "nope".into(),
                ..req("Kim")
            },
            "email",
        ),
        (req(""), "name"),
    ] {
        let err = c.create_profile(bad).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
}

#[tokio::test]
async fn describes_its_api_in_openapi_on_the_admin_listener() {
    let app = spawn_users(None).await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert!(doc["paths"]["/api/users/me"]["patch"].is_object(), "{doc}");
    assert!(doc["paths"]["/api/users/{id}"].is_object(), "{doc}");
}
