#!/usr/bin/env bash
# Builds gemini-pool's image and (re)starts its container, keeping the data in a Docker volume.
#   ./deploy.sh          serve on port 8080
#   ./deploy.sh 9000     serve on port 9000
# Creates .env from .env.example (with a generated admin password and session secret) when it
# is missing. Safe to run again: the old container is replaced, the data volume stays.
set -euo pipefail
cd "$(dirname "$0")"

PORT="${1:-8080}"
IMAGE="gemini-pool:latest"
CONTAINER="gemini-pool"
VOLUME="gemini-pool-data"

if ! [[ "$PORT" =~ ^[0-9]+$ ]] || (( PORT < 1 || PORT > 65535 )); then
  echo "usage: ./deploy.sh [PORT]   (PORT between 1 and 65535, default 8080)" >&2
  exit 2
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "Docker is required: install it from https://docs.docker.com/engine/install/ and run ./deploy.sh again." >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "Docker is installed but not reachable: start it, or run this script as a user allowed to use it." >&2
  exit 1
fi

if [ ! -f .env ]; then
  cp .env.example .env
  # Finite inputs only: with pipefail, `tr </dev/urandom | head` dies of SIGPIPE.
  password="$(head -c 48 /dev/urandom | base64 | LC_ALL=C tr -dc 'A-Za-z0-9')"
  password="${password:0:20}"
  secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  sed -i.bak -e "s|^ADMIN_PASSWORD=.*|ADMIN_PASSWORD=${password}|" -e "s|^JWT_SECRET=.*|JWT_SECRET=${secret}|" .env
  rm -f .env.bak
  chmod 600 .env
  echo "Created .env with a generated dashboard password: admin / ${password}"
  echo "Put your Gemini keys in GEMINI_API_KEYS in .env (or add them in the dashboard)."
fi
if ! grep -Eq '^GEMINI_API_KEYS=.+' .env; then
  echo "Note: GEMINI_API_KEYS is empty in .env; add keys there or in the dashboard."
fi

echo "Building ${IMAGE}…"
docker build -t "${IMAGE}" .

docker volume create "${VOLUME}" >/dev/null
if docker container inspect "${CONTAINER}" >/dev/null 2>&1; then
  echo "Replacing the running container…"
  docker rm -f "${CONTAINER}" >/dev/null
fi
docker run -d --name "${CONTAINER}" --restart unless-stopped \
  --env-file .env \
  -e LISTEN_ADDR=0.0.0.0:8080 \
  -e "DATABASE_URL=sqlite:///data/gemini-pool.db?mode=rwc" \
  -p "${PORT}:8080" \
  -v "${VOLUME}:/data" \
  "${IMAGE}" >/dev/null

echo -n "Waiting for the gateway"
for _ in $(seq 1 60); do
  status="$(docker inspect -f '{{.State.Status}}' "${CONTAINER}" 2>/dev/null || echo gone)"
  if [ "${status}" != "running" ]; then
    echo; echo "The container stopped; its last log lines:" >&2
    docker logs --tail 30 "${CONTAINER}" >&2 || true
    exit 1
  fi
  if docker exec "${CONTAINER}" /usr/local/bin/gemini-pool healthcheck --ready >/dev/null 2>&1; then
    echo " ready."
    break
  fi
  echo -n "."
  sleep 1
done
echo
echo "gemini-pool is running."
echo "  Dashboard:      http://localhost:${PORT}/"
echo "  OpenAI API:     http://localhost:${PORT}/v1   (a client key as the API key)"
echo "  Gemini API:     http://localhost:${PORT}      (as the SDK's base URL)"
echo "  Logs:           docker logs -f ${CONTAINER}"
echo "  Stop:           docker stop ${CONTAINER}"
echo "  Data volume:    ${VOLUME} (kept across deploys)"
