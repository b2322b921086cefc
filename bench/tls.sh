#!/bin/bash
# bench/tls.sh: GetUser req/s over plaintext h2c and over TLS (h2, rustls), same binary,
# alternating rounds; server pinned to core 0, h2load (4 connections x 16 streams) to core 1.
# Loopback only. Needs h2load; CERT, KEY (e.g. openssl req -x509 ... -subj /CN=localhost
# -addext subjectAltName=IP:127.0.0.1) and BODY (bench/target/release/loadgen bodies).
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${PROTOSERVE_BIN:-$root/target/release/protoserve}
cert=${CERT:?set CERT and KEY to a PEM certificate for 127.0.0.1 and its key}; key=${KEY:?}
body=${BODY:?set BODY to a framed GetUser request (loadgen bodies)}
export RUST_LOG=info,protoserve::rpc=off
for round in 1 2 3; do
for mode in plain tls; do
  port=$((30000 + RANDOM % 20000))
  if [ $mode = tls ]; then extra="--tls-cert $cert --tls-key $key"; url=https://127.0.0.1:$port; else extra=""; url=http://127.0.0.1:$port; fi
  taskset -c 0 $bin serve $root/schemas/users --data $root/bench/data/bench-user.yaml --addr 127.0.0.1:$port --no-watch $extra > ${TMPDIR:-/tmp}/tls.$mode.log 2>&1 &
  sp=$!
  for i in $(seq 100); do grep -q listening ${TMPDIR:-/tmp}/tls.$mode.log && break; sleep 0.1; done
  r=$(taskset -c 1 h2load -D 5 -c 4 -m 16 -H 'content-type: application/grpc' -H 'te: trailers' -d $body $url/users.UserService/GetUser 2>&1 | grep -E "^finished in" )
  echo "round $round $mode: $r"
  kill -INT $sp; wait $sp
done; done
