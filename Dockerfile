# The standalone host (`npm start`) as an image: a gateway sidecar (nginx auth_request, Traefik
# forwardAuth, Envoy ext_authz), a Kubernetes Deployment, an Azure Container App. docs/deploy.md.
#
#   podman build -t fhir-pdp .     (or docker build)
#   podman run --rm -p 7071:7071 -e PDP_API_KEYS=… -e PDP_CONFIG="$(cat config.json)" fhir-pdp
#
# test/integration/container-image.test.ts runs this file's runtime stage (its COPY lines, ENV,
# USER, CMD and HEALTHCHECK) from a directory laid out the same way, where images cannot be built.

# --- build: compile with tsc, then bundle the host with esbuild (scripts/bundle.mjs) -------------
FROM node:22-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Install scripts stay off as in package.json (allowScripts); esbuild ships its binary as a package.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
COPY functions ./functions
RUN npm run build

# --- runtime: Node 22 and the bundle, nothing else ------------------------------------------------
# dist/bundle/ holds the host with its production dependencies (jose, zod, the Azure SDK edges)
# inlined, and requires only Node's built-in modules: the image has no node_modules, no npm
# install, no dev dependency and no source.
FROM node:22-slim AS runtime
ENV NODE_ENV=production
ENV PORT=7071
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/dist/bundle ./dist/bundle
# The node image's unprivileged user (uid 1000); the files above stay root-owned and read-only to it.
USER node
EXPOSE 7071
# 200 once a decision can be made (keys loaded), 503 before and during an outage that blocks
# decisions. Asked on loopback: without keys the host binds 127.0.0.1 only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||7071)+'/api/health',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node itself, not npm, is PID 1: the host handles SIGTERM (stops timers, closes the server, writes
# pending decision-log lines, exits 0), so `docker stop` / a pod's termination stop it cleanly.
# It starts no child processes, so no init is needed to reap them (`--init` does no harm).
CMD ["node", "dist/bundle/main.js"]
