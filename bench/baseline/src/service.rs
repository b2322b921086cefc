//! `users.UserService` over the in-memory [`Store`].

use std::pin::Pin;
use std::sync::{PoisonError, RwLock};

use baseline::pb::user_service_server::UserService;
use baseline::pb::{BulkCreateResponse, CreateUserRequest, GetUserRequest, ListUsersRequest, User};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::store::{Store, new_user, valid_email};

/// Page size of ListUsers when the request leaves it at zero (or negative).
const DEFAULT_PAGE_SIZE: usize = 10;

#[derive(Debug)]
pub(crate) struct Directory {
    store: RwLock<Store>,
}

impl Directory {
    pub(crate) fn new(store: Store) -> Self {
        Self { store: RwLock::new(store) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn invalid_email() -> Status {
    Status::invalid_argument("Invalid email address")
}

type UserStream = Pin<Box<dyn Stream<Item = Result<User, Status>> + Send>>;

#[tonic::async_trait]
impl UserService for Directory {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = request.into_inner().user_id;
        match self.read().get(&id) {
            Some(user) => Ok(Response::new(user.clone())),
            None => Err(Status::not_found(format!("User '{id}' not found"))),
        }
    }

    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let req = request.into_inner();
        if !valid_email(&req.email) {
            return Err(invalid_email());
        }
        let user = new_user(req);
        self.write().insert(user.clone());
        Ok(Response::new(user))
    }

    type ListUsersStream = UserStream;

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<Self::ListUsersStream>, Status> {
        let req = request.into_inner();
        let limit = usize::try_from(req.page_size).ok().filter(|&n| n > 0).unwrap_or(DEFAULT_PAGE_SIZE);
        let page = self.read().page(&req.page_token, limit).map(<[User]>::to_vec).ok_or_else(|| {
            Status::invalid_argument(format!("invalid page_token '{}': no such record", req.page_token))
        })?;
        Ok(Response::new(Box::pin(tokio_stream::iter(page.into_iter().map(Ok)))))
    }

    async fn bulk_create_users(
        &self,
        request: Request<Streaming<CreateUserRequest>>,
    ) -> Result<Response<BulkCreateResponse>, Status> {
        let mut stream = request.into_inner();
        // All or nothing: read and validate the whole stream before storing anything.
        let mut users = Vec::new();
        while let Some(req) = stream.next().await {
            let req = req?;
            if !valid_email(&req.email) {
                return Err(invalid_email());
            }
            users.push(new_user(req));
        }
        let user_ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        let created_count =
            i32::try_from(users.len()).map_err(|_| Status::invalid_argument("too many users in one call"))?;
        let mut store = self.write();
        for user in users {
            store.insert(user);
        }
        Ok(Response::new(BulkCreateResponse { created_count, user_ids }))
    }
}
