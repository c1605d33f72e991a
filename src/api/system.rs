//! `/_ping`, `/version`, `/info`, `/system/df`: what a client asks before anything else.

use std::collections::HashMap;

use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bollard_stubs::models::{
    Runtime, SystemDataUsageResponse, SystemInfo, SystemVersion, SystemVersionComponents,
    SystemVersionPlatform, Volume, VolumeScopeEnum, VolumeUsageData,
};

use super::error::{blocking, ApiError};
use super::{State, API_VERSION, MIN_API_VERSION};
use crate::state::{Isolation, Status};

pub fn routes() -> Router<State> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/system/df", get(df))
}

async fn ping() -> impl IntoResponse {
    let mut h = HeaderMap::new();
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    (StatusCode::OK, h, "OK")
}

fn uname() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => (String::new(), std::env::consts::ARCH.to_string()),
    }
}

/// Docker's name for the machine's architecture (`GOARCH`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn version() -> Json<SystemVersion> {
    let (kernel, _) = uname();
    let details: HashMap<String, String> = [
        ("ApiVersion", API_VERSION),
        ("MinAPIVersion", MIN_API_VERSION),
        ("Os", "linux"),
        ("Arch", go_arch()),
        ("KernelVersion", kernel.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Json(SystemVersion {
        platform: Some(SystemVersionPlatform {
            name: "berth".into(),
        }),
        components: Some(vec![SystemVersionComponents {
            name: "Engine".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            details: Some(details),
        }]),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        api_version: Some(API_VERSION.into()),
        min_api_version: Some(MIN_API_VERSION.into()),
        git_commit: Some(String::new()),
        go_version: Some(String::new()),
        os: Some("linux".into()),
        arch: Some(go_arch().into()),
        kernel_version: Some(kernel),
        experimental: None,
        build_time: None,
    })
}

/// The runtimes `docker run --runtime` can name: the container wall and the microVM.
pub const RUNTIME_CONTAINER: &str = "berth";
pub const RUNTIME_VM: &str = "vm";

fn meminfo_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<i64>().ok())
                })
        })
        .map_or(0, |kib| kib * 1024)
}

async fn info(Extract(d): Extract<State>) -> Result<Json<SystemInfo>, ApiError> {
    let facts = blocking(move || {
        let info = d.engine.info();
        let containers = d.engine.containers();
        Ok((info, containers))
    })
    .await?;
    let (info, containers) = facts;
    let running = containers
        .iter()
        .filter(|c| crate::engine::state_of(c) == Status::Running)
        .count() as i64;
    let vms = containers
        .iter()
        .filter(|c| c.isolation == Isolation::Vm)
        .count();
    let (kernel, _) = uname();
    let runtime = |path: &str, args: &[&str]| Runtime {
        path: Some(path.to_string()),
        runtime_args: Some(args.iter().map(|a| a.to_string()).collect()),
        status: None,
    };
    let mut runtimes = HashMap::new();
    runtimes.insert(RUNTIME_CONTAINER.to_string(), runtime("berth", &[]));
    runtimes.insert(RUNTIME_VM.to_string(), runtime("berth", &["--vm"]));
    let mut warnings = Vec::new();
    if !info.kvm.starts_with("usable") {
        warnings.push(format!(
            "WARNING: the microVM runtime ({RUNTIME_VM}) is {}",
            info.kvm
        ));
    }
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Json(SystemInfo {
        id: Some(format!("berth-{}", nix::unistd::getuid())),
        containers: Some(containers.len() as i64),
        containers_running: Some(running),
        containers_paused: Some(0),
        containers_stopped: Some(containers.len() as i64 - running),
        images: Some(info.images as i64),
        driver: Some(info.rootfs_driver.clone()),
        driver_status: Some(vec![
            vec!["User namespace".into(), info.userns_mode.clone()],
            vec!["microVMs".into(), vms.to_string()],
        ]),
        docker_root_dir: Some(info.data_dir.display().to_string()),
        memory_limit: Some(false),
        swap_limit: Some(false),
        cpu_cfs_period: Some(false),
        cpu_cfs_quota: Some(false),
        cpu_shares: Some(false),
        cpu_set: Some(false),
        pids_limit: Some(false),
        oom_kill_disable: Some(false),
        ipv4_forwarding: Some(true),
        debug: Some(false),
        logging_driver: Some("json-file".into()),
        kernel_version: Some(kernel),
        operating_system: Some(os_name()),
        os_type: Some("linux".into()),
        architecture: Some(std::env::consts::ARCH.into()),
        ncpu: Some(std::thread::available_parallelism().map_or(1, |n| n.get()) as i64),
        mem_total: Some(meminfo_total()),
        index_server_address: Some("https://index.docker.io/v1/".into()),
        name: Some(host),
        server_version: Some(env!("CARGO_PKG_VERSION").into()),
        runtimes: Some(runtimes),
        default_runtime: Some(RUNTIME_CONTAINER.into()),
        security_options: Some(vec![
            "name=seccomp,profile=builtin".into(),
            "name=rootless".into(),
            "name=userns".into(),
        ]),
        warnings: Some(warnings),
        labels: Some(vec![]),
        ..SystemInfo::default()
    }))
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// `GET /system/df`: images (with how many containers use each), containers (with their
/// writable layer's size), volumes (with their size and users); berth keeps no build cache
/// apart from its images.
async fn df(Extract(d): Extract<State>) -> Result<Json<SystemDataUsageResponse>, ApiError> {
    let usage = blocking(move || d.engine.disk_usage()).await?;
    let layers_size = usage.images.iter().map(|i| i.image.size as i64).sum();
    let images = usage
        .images
        .into_iter()
        .map(|u| {
            let containers = u.containers as i64;
            bollard_stubs::models::ImageSummary {
                containers,
                ..super::images::summary(u.image)
            }
        })
        .collect();
    let containers = usage
        .containers
        .into_iter()
        .map(|u| bollard_stubs::models::ContainerSummary {
            size_rw: Some(u.size_rw as i64),
            ..super::convert::summary(&u.record)
        })
        .collect();
    let volumes = usage
        .volumes
        .into_iter()
        .map(|u| Volume {
            name: u.record.name,
            driver: "local".into(),
            mountpoint: u.mountpoint.display().to_string(),
            created_at: Some(u.record.created),
            labels: u.record.labels.into_iter().collect(),
            scope: Some(VolumeScopeEnum::LOCAL),
            usage_data: Some(VolumeUsageData {
                size: u.size as i64,
                ref_count: u.users as i64,
            }),
            ..Volume::default()
        })
        .collect();
    Ok(Json(SystemDataUsageResponse {
        layers_size: Some(layers_size),
        images: Some(images),
        containers: Some(containers),
        volumes: Some(volumes),
        build_cache: Some(Vec::new()),
    }))
}
