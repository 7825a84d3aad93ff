#!/usr/bin/env bash
# Makes a self-signed certificate for *.devops.cn the way the myblog tutorial does, and prints
# the kubernetes.io/tls Secret that holds it.
#
#   certs/make-cert.sh [OUT_DIR] [NAMESPACE] [SECRET_NAME]
#
# Writes OUT_DIR/tls.crt and OUT_DIR/tls.key (default: certs/), then prints the Secret manifest
# (namespace demo, name https-secret by default) on stdout. For a cluster, the same files go in
#   kubectl -n demo create secret tls https-secret --key tls.key --cert tls.crt
set -euo pipefail
out=${1:-$(dirname "$0")}
ns=${2:-demo}
name=${3:-https-secret}
mkdir -p "$out"
openssl req -x509 -nodes -days 2920 -newkey rsa:2048 \
  -keyout "$out/tls.key" -out "$out/tls.crt" \
  -subj "/CN=*.devops.cn/O=ingress-nginx" 2>/dev/null
b64() { base64 -w0 < "$1"; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $name
  namespace: $ns
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$out/tls.crt")
  tls.key: $(b64 "$out/tls.key")
YAML
