// The seed's client flow with @grpc/grpc-js, loading the schema from the
// descriptor set `protoserve check --descriptor-set-out` wrote, once per channel
// compression setting (none, gzip, deflate; grpc-js's
// `grpc.default_compression_algorithm`: 0 identity, 1 deflate, 2 gzip).
//
// Usage: node users_client.js HOST:PORT DESCRIPTOR_SET
// Exits non-zero with the failed expectation when anything is off.
'use strict';

const fs = require('node:fs');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [target, setPath] = process.argv.slice(2);
const definition = protoLoader.loadFileDescriptorSetFromBuffer(fs.readFileSync(setPath), {
  keepCase: true,
  longs: String,
  defaults: true,
});
const { UserService } = grpc.loadPackageDefinition(definition).users;

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

function list(client, request) {
  return new Promise((resolve, reject) => {
    const out = [];
    const call = client.ListUsers(request);
    call.on('data', (u) => out.push(u));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

function bulk(client, requests) {
  return new Promise((resolve, reject) => {
    const call = client.BulkCreateUsers((err, reply) => (err ? reject(err) : resolve(reply)));
    for (const r of requests) call.write(r);
    call.end();
  });
}

async function flow(algorithm, tag) {
  const client = new UserService(target, grpc.credentials.createInsecure(), {
    'grpc.default_compression_algorithm': algorithm,
  });
  try {
    const alice = await unary(client, 'CreateUser', { name: 'Alice', email: `alice-${tag}@example.com`, age: 30 });
    assert.equal(alice.id.length, 36, tag);
    assert.deepEqual(await unary(client, 'GetUser', { user_id: alice.id }), alice);
    await assert.rejects(unary(client, 'GetUser', { user_id: 'nonexistent' }), (e) => {
      assert.equal(e.code, grpc.status.NOT_FOUND);
      assert.equal(e.details, "User 'nonexistent' not found");
      return true;
    });
    await assert.rejects(unary(client, 'CreateUser', { name: 'Eve', email: 'no-at-sign' }), (e) => {
      assert.equal(e.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(e.details, 'Invalid email address');
      return true;
    });
    const users = await list(client, { page_size: 100 });
    assert.ok(users.some((u) => u.id === alice.id), tag);
    const made = await bulk(client, [
      { name: 'Bob', email: 'bob@example.com' },
      { name: 'Carol', email: 'carol@example.com' },
    ]);
    assert.equal(made.created_count, 2, tag);
    assert.equal(made.user_ids.length, 2, tag);
  } finally {
    client.close();
  }
}

(async () => {
  await flow(0, 'identity');
  await flow(2, 'gzip');
  await flow(1, 'deflate');
  console.log('node interop: ok');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
