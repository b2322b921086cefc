//! Fixtures for the codec micro-benchmarks: the seed schema compiled the way
//! protoserve compiles it (buf.validate resolved), and the same messages as prost
//! generated types and as encoded bytes.

use std::path::PathBuf;

use baseline::pb;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};

/// The seed schema directory of the repository.
pub fn seed_schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/users")
}

/// Everything one benchmark needs, built once.
#[derive(Debug)]
pub struct Fixtures {
    pub pool: DescriptorPool,
    pub create_request_desc: MessageDescriptor,
    pub user_desc: MessageDescriptor,
    pub create_request: pb::CreateUserRequest,
    pub user: pb::User,
    /// `create_request` encoded.
    pub create_request_bytes: Vec<u8>,
    /// `user` encoded.
    pub user_bytes: Vec<u8>,
}

impl Fixtures {
    /// Compiles the seed schema with protoserve's loader.
    ///
    /// # Panics
    /// When the schema does not compile or lacks the seed messages: a benchmark
    /// cannot run without them.
    pub fn load() -> Self {
        let dir = seed_schema_dir();
        let schema = protoserve::schema::load(std::slice::from_ref(&dir))
            .unwrap_or_else(|e| panic!("compiling {}: {}", dir.display(), e.render()));
        let pool = schema.pool().clone();
        let message =
            |name: &str| pool.get_message_by_name(name).unwrap_or_else(|| panic!("{name} is not in the seed schema"));
        let create_request_desc = message("users.CreateUserRequest");
        let user_desc = message("users.User");
        let create_request =
            pb::CreateUserRequest { name: "Load Test".into(), email: "load@example.com".into(), age: 42 };
        let user = pb::User {
            id: "6f1c1a9e-2b7d-4c1e-9a3f-0d5b8e7c6a21".into(),
            name: "Load Test".into(),
            email: "load@example.com".into(),
            age: 42,
            created_at: 1_764_000_000,
        };
        Self {
            create_request_bytes: create_request.encode_to_vec(),
            user_bytes: user.encode_to_vec(),
            pool,
            create_request_desc,
            user_desc,
            create_request,
            user,
        }
    }

    /// A dynamic `users.User` equal to [`Fixtures::user`], built field by field the
    /// way a dynamic handler builds its response.
    pub fn dynamic_user(&self, id: &str, req: &DynamicMessage, created_at: i64) -> DynamicMessage {
        let mut user = DynamicMessage::new(self.user_desc.clone());
        user.set_field_by_name("id", Value::String(id.to_owned()));
        for field in ["name", "email", "age"] {
            if let Some(value) = req.get_field_by_name(field) {
                user.set_field_by_name(field, value.into_owned());
            }
        }
        user.set_field_by_name("created_at", Value::I64(created_at));
        user
    }
}

/// The email rule as the baseline writes it by hand.
pub fn handwritten_valid(req: &pb::CreateUserRequest) -> bool {
    req.email.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_and_generated_agree() {
        let f = Fixtures::load();
        let req = DynamicMessage::decode(f.create_request_desc.clone(), f.create_request_bytes.as_slice()).unwrap();
        let user = f.dynamic_user(&f.user.id, &req, f.user.created_at);
        assert_eq!(user.encode_to_vec(), f.user_bytes);
        let validator = prost_protovalidate::Validator::new();
        assert!(validator.validate(&req).is_ok());
        let mut bad = req;
        bad.set_field_by_name("email", Value::String("no-at".into()));
        assert!(validator.validate(&bad).is_err(), "the CEL email rule must be active");
    }
}
