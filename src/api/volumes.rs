//! `/volumes/...`: list, create, inspect, remove, prune; berth's named volumes, Docker's
//! `local` driver. Removing a volume may remove files a container's other users own (a user
//! namespace's work), so removal and prune run in the engine helper.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bollard_stubs::models::{
    Volume, VolumeCreateOptions, VolumeListResponse, VolumePruneResponse, VolumeScopeEnum,
};
use serde::Deserialize;

use super::error::{blocking, ApiError};
use super::helper::HelperRequest;
use super::networks::FiltersQuery;
use super::State;
use crate::engine::VolumeInspect;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

fn volume(v: VolumeInspect) -> Volume {
    Volume {
        name: v.name,
        driver: v.driver.to_string(),
        mountpoint: v.mountpoint.display().to_string(),
        created_at: Some(v.created_at),
        status: None,
        labels: v.labels.into_iter().collect(),
        scope: Some(VolumeScopeEnum::LOCAL),
        cluster_volume: None,
        options: v.options.into_iter().collect(),
        usage_data: None,
    }
}

async fn list(
    Extract(d): Extract<State>,
    Query(q): Query<FiltersQuery>,
) -> Result<Json<VolumeListResponse>, ApiError> {
    let filters = q.parsed()?;
    let volumes = blocking(move || {
        let mut out = Vec::new();
        for (v, _) in d.engine.volumes_matching(&filters)? {
            match d.engine.volume_inspect(&v.name) {
                Ok(i) => out.push(volume(i)),
                // Removed meanwhile: not listed.
                Err(crate::engine::EngineError::Volume(
                    crate::state::volumes::VolumeError::NotFound(_),
                )) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(VolumeListResponse {
        volumes: Some(volumes),
        warnings: Some(vec![]),
    }))
}

async fn create(
    Extract(d): Extract<State>,
    body: Bytes,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let req: VolumeCreateOptions = super::networks::json_body(&body)?;
    super::networks::only_driver(
        req.driver.as_deref(),
        "local",
        "volume driver {} is not available: berth's volumes are directories of the local driver (leave --driver out)",
    )?;
    let mut opts: Vec<&String> = req.driver_opts.iter().flatten().map(|(k, _)| k).collect();
    opts.sort();
    if let Some(k) = opts.first() {
        return Err(ApiError::bad_request(format!(
            "volume option {k:?} cannot be honoured: berth's local volumes are plain directories, without type, device or o options; for a host directory use a bind mount (-v /host/path:/path)"
        )));
    }
    if req.cluster_volume_spec.is_some() {
        return Err(ApiError::bad_request(
            "cluster volumes need a swarm: berth's volumes are local",
        ));
    }
    let labels = req.labels.unwrap_or_default().into_iter().collect();
    let v = blocking(move || {
        let name = d.engine.volume_create(req.name.as_deref(), labels)?;
        d.engine.volume_inspect(&name)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(volume(v))))
}

async fn inspect(
    Extract(d): Extract<State>,
    Path(name): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    blocking(move || d.engine.volume_inspect(&name))
        .await
        .map(|v| Json(volume(v)))
}

#[derive(Deserialize)]
struct RemoveQuery {
    force: Option<String>,
}

async fn remove(
    Extract(d): Extract<State>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let force = matches!(q.force.as_deref(), Some("1" | "true" | "True"));
    match d.helper(HelperRequest::VolumeRemove { name }, None).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        // `-f`: a volume that is not there is no error.
        Err(e) if force && e.status == StatusCode::NOT_FOUND => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e),
    }
}

async fn prune(
    Extract(d): Extract<State>,
    Query(q): Query<FiltersQuery>,
) -> Result<Json<VolumePruneResponse>, ApiError> {
    let mut all = false;
    let mut filters = Vec::new();
    for (k, v) in q.parsed()? {
        match k.as_str() {
            "all" => all = matches!(v.as_str(), "1" | "true"),
            "label" => filters.push((k, v)),
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter {other:?}: volumes are pruned by label and all"
                )))
            }
        }
    }
    let answer = d
        .helper(HelperRequest::VolumePrune { all, filters }, None)
        .await?;
    let (deleted, reclaimed): (Vec<String>, u64) = serde_json::from_value(answer)
        .map_err(|e| ApiError::internal(format!("reading the helper's answer: {e}")))?;
    Ok(Json(VolumePruneResponse {
        volumes_deleted: Some(deleted),
        space_reclaimed: Some(reclaimed as i64),
    }))
}
