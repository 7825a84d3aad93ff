//! The HTTP side of the fake API server: paths, verbs, lists, watch streams, errors as
//! `Status` objects.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{Key, Logged, RESOURCES, Res, State, Watch, expired_line, line};

type Body = BoxBody<Bytes, io::Error>;

/// Serves connections until aborted; while down, connections are closed at once.
pub(super) async fn accept(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if state.lock().unwrap().down {
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What a path names.
struct Target {
    res: Res,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> io::Result<Response<Body>> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let mut s = state.lock().unwrap();
    if s.down {
        return Err(io::Error::other("the fake API server is down"));
    }
    s.log.push(Logged {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    let Some(target) = parse_path(&path) else {
        return Ok(status(404, "NotFound", &format!("no resource at {path}")));
    };
    if parts.method == Method::GET && s.forbidden.contains(&target.res) {
        let plural = RESOURCES[target.res].2;
        let message = format!(
            "{plural} is forbidden: User \"system:serviceaccount:portico:portico\" cannot list resource \"{plural}\""
        );
        return Ok(status(403, "Forbidden", &message));
    }
    let params = parse_query(&query);
    let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    Ok(match (&parts.method, &target.name) {
        (&Method::GET, None) if watching => watch(&mut s, target, &params),
        (&Method::GET, None) => list(&s, &target, &params),
        (&Method::GET, Some(name)) => match s.objects.get(&key(&target, name)) {
            Some(object) => json_response(StatusCode::OK, object),
            None => status(404, "NotFound", &format!("{name} not found")),
        },
        (&Method::POST, None) => create(&mut s, &target, body),
        (&Method::PUT, Some(name)) => replace(&mut s, &target, name, body),
        (&Method::PATCH, Some(name)) => patch(&mut s, &target, name, body),
        _ => status(405, "MethodNotAllowed", "not supported by the fake"),
    })
}

fn parse_path(path: &str) -> Option<Target> {
    let (api_version, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("v1".to_string(), rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut it = rest.splitn(3, '/');
        let (group, version, rest) = (it.next()?, it.next()?, it.next()?);
        (format!("{group}/{version}"), rest)
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (namespace, rest) = match segments.as_slice() {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let plural = *rest.first()?;
    let res = RESOURCES
        .iter()
        .position(|r| r.0 == api_version && r.2 == plural)?;
    Some(Target {
        res,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn key(target: &Target, name: &str) -> Key {
    let ns = target.namespace.clone().filter(|_| RESOURCES[target.res].3);
    (target.res, ns.unwrap_or_default(), name.to_string())
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=b,c==d` as pairs.
fn selector(params: &BTreeMap<String, String>, name: &str) -> Vec<(String, String)> {
    params
        .get(name)
        .map(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_start_matches('=').to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn new_watch(target: &Target, params: &BTreeMap<String, String>) -> (Watch, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let watch = Watch {
        res: target.res,
        namespace: target.namespace.clone(),
        fields: selector(params, "fieldSelector"),
        labels: selector(params, "labelSelector"),
        tx,
    };
    (watch, rx)
}

type Receiver = mpsc::UnboundedReceiver<Result<Bytes, io::Error>>;

fn list(s: &State, target: &Target, params: &BTreeMap<String, String>) -> Response<Body> {
    let (filter, _rx) = new_watch(target, params);
    let items: Vec<&Value> = s
        .objects
        .iter()
        .filter(|(k, v)| filter.selects(k, v))
        .map(|(_, v)| v)
        .collect();
    let (api_version, kind, _, _) = RESOURCES[target.res];
    let list = json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                      "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
    json_response(StatusCode::OK, &list)
}

/// The changes after the given resourceVersion, then live ones; a resourceVersion older
/// than the compacted history gets an ERROR 410 line.
fn watch(s: &mut State, target: Target, params: &BTreeMap<String, String>) -> Response<Body> {
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(s.rv);
    let (watch, rx) = new_watch(&target, params);
    if from < s.compacted {
        let _ = watch.tx.send(Ok(expired_line(s.rv)));
    } else {
        for change in s.history.iter().filter(|c| c.rv > from) {
            if watch.selects(&change.key, &change.object) {
                let _ = watch.tx.send(Ok(line(change.kind, &change.object)));
            }
        }
        s.watches.push(watch);
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let body = StreamBody::new(stream.map(|item| item.map(Frame::data)));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .unwrap()
}

fn create(s: &mut State, target: &Target, body: Option<Value>) -> Response<Body> {
    let Some(mut object) = body.filter(Value::is_object) else {
        return status(400, "BadRequest", "body is not an object");
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
        return status(422, "Invalid", "metadata.name is required");
    };
    let key = key(target, &name);
    if s.objects.contains_key(&key) {
        return status(409, "AlreadyExists", &format!("{name} already exists"));
    }
    let (api_version, kind, _, _) = RESOURCES[target.res];
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    let stored = s.put(key, object);
    json_response(StatusCode::CREATED, &stored)
}

/// PUT: optimistic concurrency on metadata.resourceVersion; `/status` replaces only status.
fn replace(s: &mut State, target: &Target, name: &str, body: Option<Value>) -> Response<Body> {
    let key = key(target, name);
    let Some(stored) = s.objects.get(&key).cloned() else {
        return status(404, "NotFound", &format!("{name} not found"));
    };
    let Some(body) = body.filter(Value::is_object) else {
        return status(400, "BadRequest", "body is not an object");
    };
    let sent_rv = &body["metadata"]["resourceVersion"];
    if !sent_rv.is_null() && *sent_rv != stored["metadata"]["resourceVersion"] {
        return status(409, "Conflict", "the object has been modified");
    }
    let object = if target.subresource.as_deref() == Some("status") {
        let mut object = stored;
        object["status"] = body["status"].clone();
        object
    } else {
        body
    };
    let stored = s.put(key, object);
    json_response(StatusCode::OK, &stored)
}

/// PATCH as a JSON merge patch (RFC 7386).
fn patch(s: &mut State, target: &Target, name: &str, body: Option<Value>) -> Response<Body> {
    let key = key(target, name);
    let Some(mut object) = s.objects.get(&key).cloned() else {
        return status(404, "NotFound", &format!("{name} not found"));
    };
    merge(&mut object, &body.unwrap_or(Value::Null));
    let stored = s.put(key, object);
    json_response(StatusCode::OK, &stored)
}

fn merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in fields {
        if v.is_null() {
            target.as_object_mut().unwrap().remove(k);
        } else {
            merge(&mut target[k], v);
        }
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(value).unwrap());
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(bytes).map_err(|never| match never {}).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let value = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code});
    json_response(StatusCode::from_u16(code).unwrap(), &value)
}
