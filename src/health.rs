//! `grpc.health.v1.Health` (Check and Watch) over the live schema's services.
//!
//! Our own implementation of tonic-health's generated trait, because a reload
//! must be able to say SERVICE_UNKNOWN for a removed service, which tonic-health's
//! reporter cannot express.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Serving statuses by service name (`""` is the server as a whole).
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthState {
    /// A watch channel per service ever asked about or served; std Mutex, never
    /// held across `.await`.
    services: Arc<Mutex<HashMap<String, watch::Sender<ServingStatus>>>>,
}

impl HealthState {
    /// Sets a service's status, waking its watchers.
    pub(crate) fn set(&self, service: &str, status: ServingStatus) {
        let mut map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(service) {
            Some(tx) => {
                tx.send_replace(status);
            }
            None => {
                map.insert(service.to_owned(), watch::channel(status).0);
            }
        }
    }

    fn get(&self, service: &str) -> Option<ServingStatus> {
        let map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        map.get(service).map(|tx| *tx.borrow()).filter(|s| *s != ServingStatus::ServiceUnknown)
    }

    fn subscribe(&self, service: &str) -> watch::Receiver<ServingStatus> {
        let mut map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(service.to_owned()).or_insert_with(|| watch::channel(ServingStatus::ServiceUnknown).0).subscribe()
    }

    /// The gRPC service answering health requests from this state.
    pub(crate) fn server(&self) -> HealthServer<HealthState> {
        HealthServer::new(self.clone())
    }
}

type WatchStreamOf = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthState {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let name = &request.get_ref().service;
        match self.get(name) {
            Some(status) => Ok(Response::new(HealthCheckResponse { status: status as i32 })),
            None => Err(crate::Error::not_found(format!("unknown service '{name}'")).into_status()),
        }
    }

    type WatchStream = WatchStreamOf;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let rx = self.subscribe(&request.get_ref().service);
        let stream = WatchStream::new(rx).map(|s| Ok(HealthCheckResponse { status: s as i32 }));
        Ok(Response::new(Box::pin(stream)))
    }
}
