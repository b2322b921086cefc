//! Per-message costs of the dynamic path (prost-reflect DynamicMessage +
//! prost-protovalidate) against prost generated types, for the seed messages.
//!
//!     cargo bench --manifest-path bench/Cargo.toml -p micro
//!
//! Groups: decode, validate, encode (CreateUserRequest and User), and `create_user`:
//! the whole body of a CreateUser handler minus the store (decode the request,
//! validate it, build the User, encode it).

use std::hint::black_box;

use baseline::pb;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use micro::{Fixtures, handwritten_valid};
use prost::Message as _;
use prost_protovalidate::Validator;
use prost_reflect::DynamicMessage;

fn decode(c: &mut Criterion, f: &Fixtures) {
    let mut group = c.benchmark_group("decode");
    for (name, bytes, desc) in
        [("CreateUserRequest", &f.create_request_bytes, &f.create_request_desc), ("User", &f.user_bytes, &f.user_desc)]
    {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("dynamic", name), bytes, |b, bytes| {
            b.iter(|| DynamicMessage::decode(desc.clone(), black_box(bytes.as_slice())).unwrap());
        });
    }
    group.throughput(Throughput::Bytes(f.create_request_bytes.len() as u64));
    group.bench_function(BenchmarkId::new("prost", "CreateUserRequest"), |b| {
        b.iter(|| pb::CreateUserRequest::decode(black_box(f.create_request_bytes.as_slice())).unwrap());
    });
    group.throughput(Throughput::Bytes(f.user_bytes.len() as u64));
    group.bench_function(BenchmarkId::new("prost", "User"), |b| {
        b.iter(|| pb::User::decode(black_box(f.user_bytes.as_slice())).unwrap());
    });
    group.finish();
}

fn validate(c: &mut Criterion, f: &Fixtures) {
    let mut group = c.benchmark_group("validate");
    let validator = Validator::new();
    let req = DynamicMessage::decode(f.create_request_desc.clone(), f.create_request_bytes.as_slice()).unwrap();
    // The first call compiles and caches the CEL program; measure the steady state.
    validator.validate(&req).unwrap();
    group.bench_function(BenchmarkId::new("dynamic", "CreateUserRequest"), |b| {
        b.iter(|| validator.validate(black_box(&req)).unwrap());
    });
    group.bench_function(BenchmarkId::new("handwritten", "CreateUserRequest"), |b| {
        b.iter(|| assert!(handwritten_valid(black_box(&f.create_request))));
    });
    group.finish();
}

fn encode(c: &mut Criterion, f: &Fixtures) {
    let mut group = c.benchmark_group("encode");
    let dyn_req = DynamicMessage::decode(f.create_request_desc.clone(), f.create_request_bytes.as_slice()).unwrap();
    let dyn_user = DynamicMessage::decode(f.user_desc.clone(), f.user_bytes.as_slice()).unwrap();
    for (name, msg) in [("CreateUserRequest", &dyn_req), ("User", &dyn_user)] {
        group.bench_function(BenchmarkId::new("dynamic", name), |b| {
            b.iter(|| black_box(msg).encode_to_vec());
        });
    }
    group.bench_function(BenchmarkId::new("prost", "CreateUserRequest"), |b| {
        b.iter(|| black_box(&f.create_request).encode_to_vec());
    });
    group.bench_function(BenchmarkId::new("prost", "User"), |b| {
        b.iter(|| black_box(&f.user).encode_to_vec());
    });
    group.finish();
}

fn create_user(c: &mut Criterion, f: &Fixtures) {
    let mut group = c.benchmark_group("create_user");
    let validator = Validator::new();
    let (id, created_at) = (f.user.id.as_str(), f.user.created_at);
    group.bench_function("dynamic", |b| {
        b.iter(|| {
            let req =
                DynamicMessage::decode(f.create_request_desc.clone(), black_box(f.create_request_bytes.as_slice()))
                    .unwrap();
            validator.validate(&req).unwrap();
            f.dynamic_user(id, &req, created_at).encode_to_vec()
        });
    });
    group.bench_function("prost", |b| {
        b.iter(|| {
            let req = pb::CreateUserRequest::decode(black_box(f.create_request_bytes.as_slice())).unwrap();
            assert!(handwritten_valid(&req));
            pb::User { id: id.to_owned(), name: req.name, email: req.email, age: req.age, created_at }.encode_to_vec()
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let f = Fixtures::load();
    decode(c, &f);
    validate(c, &f);
    encode(c, &f);
    create_user(c, &f);
}

criterion_group!(codec, benches);
criterion_main!(codec);
