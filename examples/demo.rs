//! The demo: runyard embedded in a Rust program, on the embedded store, with a `local` runner
//! (a child process) and a `service` runner (an async Rust function registered below).
//!
//! ```text
//! cargo run --release --example demo            # runs two demo jobs, then keeps serving
//! cargo run --release --example demo -- --exit  # runs them and exits
//! ```
//!
//! While it serves, try the CLI from another terminal:
//! `cargo run --release -- submit demo.greet --args '{"name":"you"}' --wait`.

use runyard::config::Config;
use runyard::server::ServerBuilder;
use serde_json::{json, Value};

const CONFIG: &str = r#"
listen = "127.0.0.1:7070"
data_dir = "./runyard-data"

# A child process: any language. It gets JOB_ID, JOB_ARGS, JOB_HOOK, JOB_SECRET_KEY...
[[runners]]
kind = "local"
types = ["demo.shell"]
command = ["/bin/sh", "-c", "echo \"hello from a child process, job $JOB_ID\"; echo \"args: $JOB_ARGS\"; sleep 1; echo bye"]
concurrency = 4
timeout = "1m"

# An async Rust function: `demo.greet`, registered below by `runyard::demo::register`.
[[runners]]
kind = "service"
types = ["demo.greet", "runyard.*"]
concurrency = 16
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUNYARD_LOG").unwrap_or_else(|_| "warn,runyard=info".into()),
        )
        .init();
    let exit = std::env::args().any(|a| a == "--exit");
    let config = Config::from_toml(CONFIG)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let server = runyard::demo::register(ServerBuilder::new(config))
        .start(listener)
        .await?;
    let base = server.url();
    println!("runyard is serving on {base} (embedded store in ./runyard-data)");

    let http = reqwest::Client::new();
    for (ty, args) in [
        ("demo.shell", json!({"report": "daily"})),
        ("demo.greet", json!({"name": "newcomer"})),
    ] {
        let (id, job, logs) = runyard::demo::run_one(&http, &base, None, ty, args).await?;
        println!("\nsubmitted {ty}: {id}");
        println!("  status: {}   result: {}", job["status"], job["result"]);
        for l in logs["lines"].as_array().into_iter().flatten() {
            println!("  log: {}", l["line"].as_str().unwrap_or_default());
        }
    }
    let events: Value = http
        .get(format!("{base}/api/v1/async_event/?last_id=0"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "\n{} events so far (GET /api/v1/async_event/?last_id=0)",
        events["result"].as_array().map_or(0, Vec::len)
    );
    if exit {
        return server.stop().await;
    }
    println!("\nStill serving on {base}; try: cargo run --release -- submit demo.greet --args '{{\"name\":\"you\"}}' --wait");
    println!("ctrl-c to stop");
    runyard::cli::shutdown_signal().await;
    server.stop().await
}
