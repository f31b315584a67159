#!/bin/sh
# Regenerate the test PKI used by the suite and by the sample bundle in certs_credentials/.
# Usage: sh tests/certdata/make_certs.sh   (needs the openssl command, 1.1.1 or 3.x)
# Everything here is for local testing only: the keys are public, the names obviously fake.
set -eu
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Far-future validity for everything except expired.pem; EC P-256 keys keep handshakes fast.
NOT_BEFORE=20250101000000Z
NOT_AFTER=20991231235959Z

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

make_ca() { # name subject
  key "$1.key"
  cat > "$work/$1.ext" <<EOT
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOT
  openssl req -new -key "$1.key" -subj "$2" -out "$work/$1.csr"
  sign "$1" "$1" "$work/$1.ext" "$NOT_BEFORE" "$NOT_AFTER" selfsign
}

# sign NAME ISSUER EXTFILE START END [selfsign]
sign() {
  mkdir -p "$work/db-$2"
  : > "$work/db-$2/index.txt"
  cat > "$work/ca-$2.cnf" <<EOT
[ ca ]
default_ca = testca
[ testca ]
database = $work/db-$2/index.txt
new_certs_dir = $work/db-$2
serial = $work/db-$2/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
organizationName = optional
EOT
  # A random serial per certificate, so a regenerated PKI never collides with an old one.
  echo "7f$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" > "$work/db-$2/serial"
  if [ "${6:-}" = selfsign ]; then
    openssl ca -batch -notext -config "$work/ca-$2.cnf" -selfsign -keyfile "$2.key" \
      -in "$work/$1.csr" -out "$1.pem" -extfile "$3" -startdate "$4" -enddate "$5" 2>/dev/null
  else
    openssl ca -batch -notext -config "$work/ca-$2.cnf" -cert "$2.pem" -keyfile "$2.key" \
      -in "$work/$1.csr" -out "$1.pem" -extfile "$3" -startdate "$4" -enddate "$5" 2>/dev/null
  fi
}

leaf() { # name issuer cn san eku start end
  key "$1.key"
  cat > "$work/$1.ext" <<EOT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $5
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $4
EOT
  openssl req -new -key "$1.key" -subj "/O=iotpost TEST ONLY/CN=$3" -out "$work/$1.csr"
  sign "$1" "$2" "$work/$1.ext" "$6" "$7"
}

# The mTLS extras only ("sh make_certs.sh mtls"): client certificates a server must refuse, and an
# encrypted copy of client.key; they reuse ca and other-ca as they are, so nothing else changes.
make_mtls() {
  leaf client-expired ca "test-device-client" "DNS:test-device-client.invalid" clientAuth 20200101000000Z 20210101000000Z
  leaf client-other-ca other-ca "test-device-client" "DNS:test-device-client.invalid" clientAuth $NOT_BEFORE $NOT_AFTER
  # PKCS#8 with AES-256; the password is in client-key-password.txt (public, like every key here).
  printf '%s\n' "iotpost-test-password" > client-key-password.txt
  openssl pkcs8 -topk8 -v2 aes-256-cbc -in client.key -out client-encrypted.key \
    -passout file:client-key-password.txt
  chmod 644 client-expired.* client-other-ca.* client-encrypted.key client-key-password.txt
}
# An expired CA only ("sh make_certs.sh expired-ca"): a CA file may hold one among valid ones (iotpost doctor).
make_expired_ca() {
  key expired-ca.key
  cat > "$work/expired-ca.ext" <<EOT
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOT
  openssl req -new -key expired-ca.key -subj "/O=iotpost TEST ONLY/CN=Expired Test CA" -out "$work/expired-ca.csr"
  sign expired-ca expired-ca "$work/expired-ca.ext" 20200101000000Z 20210101000000Z selfsign
  chmod 644 expired-ca.*
}
if [ "${1:-}" = expired-ca ]; then
  make_expired_ca
  echo "expired test CA regenerated in $(pwd)"
  exit 0
fi
if [ "${1:-}" = mtls ]; then
  make_mtls
  echo "mTLS test certificates regenerated in $(pwd)"
  exit 0
fi

make_ca ca "/O=iotpost TEST ONLY/CN=iotpost Test CA (not for production)"
make_ca other-ca "/O=iotpost TEST ONLY/CN=Unrelated Test CA (not trusted by the bundle)"

LOCAL="DNS:localhost, IP:127.0.0.1, IP:::1"
leaf localhost ca localhost "$LOCAL" serverAuth $NOT_BEFORE $NOT_AFTER
leaf wronghost ca wrong-host.invalid "DNS:wrong-host.invalid" serverAuth $NOT_BEFORE $NOT_AFTER
leaf expired ca localhost "$LOCAL" serverAuth 20200101000000Z 20210101000000Z
leaf other-localhost other-ca localhost "$LOCAL" serverAuth $NOT_BEFORE $NOT_AFTER
leaf client ca "test-device-client" "DNS:test-device-client.invalid" clientAuth $NOT_BEFORE $NOT_AFTER
make_mtls
make_expired_ca

# The sample bundle trusts exactly the test CA, so it works against the local twin out of the box.
cp ca.pem ../../certs_credentials/ca-chain.pem
chmod 644 ./*.pem ./*.key
echo "test PKI regenerated in $(pwd)"
