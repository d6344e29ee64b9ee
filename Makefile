# ConstructOS ML platform — every entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
DATA_DIR  ?= data
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081
MODEL     ?= credit_risk
export CONSTRUCTOS_DATA_DIR ?= $(abspath $(DATA_DIR))
export MLFLOW_TRACKING_URI ?= sqlite:///$(CONSTRUCTOS_DATA_DIR)/mlflow/mlflow.db
# Slow downloads and builds (kustomize, Kafka jars, ...) are cached outside the checkout, keyed by version.
export CONSTRUCTOS_TOOLS_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/constructos
KUSTOMIZE_VERSION := v5.8.1
export KUSTOMIZE ?= $(CONSTRUCTOS_TOOLS_CACHE)/kustomize-$(KUSTOMIZE_VERSION)/kustomize

.PHONY: help install test test-unit lint fmt demo serve pipeline compile mlflow \
        kafka-up kafka-down trigger manifests-check bench ghz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet uv
	uv sync --frozen --group docs --group erp
	@touch $@

install: $(STAMP) ## build .venv from the lock file (uv)

# tests are hermetic: they make their own data dirs and stores, never the user's
HERMETIC := env -u MLFLOW_TRACKING_URI -u CONSTRUCTOS_DATA_DIR

# one OpenMP thread per test process (and what it starts): the workers already fill the cores, and
# OpenMP threads spinning beside them made a small scikit-learn fit 10-50x slower on a busy machine
TEST_OMP_THREADS ?= 1
TEST_ENV := $(HERMETIC) OMP_NUM_THREADS=$(TEST_OMP_THREADS)

# one pytest-xdist worker per core; a test file stays on one worker (its module fixtures run once)
TEST_WORKERS ?= auto
PYTEST := $(TEST_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP) $(KUSTOMIZE) ## run every test on every core (starts Kafka itself when a test needs it); the 25 slowest listed
	$(PYTEST) --durations=25

test-unit: $(STAMP) ## fast in-process tests only
	$(PYTEST) -m "not integration" --durations=10

lint: $(STAMP) ## ruff + mypy + the manifests are what the specs render
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/deptry .  # shipped code: runtime dependencies only, none unused or transitive ([tool.deptry])
	$(VENV)/bin/deptry . examples/erp --exclude '^(\.venv|data|build|feature_specs|platform_settings|predictors|pipelines|clients)(/|$$)' --ignore DEP002,DEP004  # tests, bench, docs, examples (their apps are local): dev groups too
	$(PY) -m pipelines.manifests.render --check

fmt: $(STAMP) ## format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: docs
docs: $(STAMP) ## the docs site in build/site: reference pages generated from the code, then mkdocs build --strict
	$(HERMETIC) $(PY) docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

# --- serving -------------------------------------------------------------------------------
serve: $(STAMP) ## serve every model (one per feature spec) (REST on HTTP_PORT=8080, gRPC on GRPC_PORT=8081) from the MLflow @champion versions
	$(PY) -m predictors --http_port=$(HTTP_PORT) --grpc_port=$(GRPC_PORT)

GHZ_VERSION := v0.121.0
export GHZ ?= $(CONSTRUCTOS_TOOLS_CACHE)/ghz-$(GHZ_VERSION)/ghz

$(GHZ):
	GOBIN=$(dir $(GHZ)) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

ghz: $(GHZ) ## build the pinned gRPC load generator ghz (Go module proxy) into the tools cache

bench: $(STAMP) ## benchmarks: serving REST (wrk; installs it) beside Seldon MLServer (its own env in the tools cache) and the limit of a Python server + gRPC (ghz, when Go is there) + micro-batching, the pipeline, the trigger (starts Kafka), local vs S3 stores and trigger landing into S3 (after stores-up)
	@command -v wrk >/dev/null || (echo "installing wrk (Debian package)"; sudo -n true 2>/dev/null && sudo apt-get install -y -q wrk || apt-get install -y -q wrk)
	@command -v go >/dev/null && $(MAKE) --no-print-directory ghz || echo "no Go: the gRPC benchmark is skipped"
	$(PY) -m bench.serving
	$(PY) -m bench.pipeline
	$(MAKE) --no-print-directory kafka-up
	$(PY) -m bench.trigger --events 100000
	$(PY) -m bench.trigger_memory --events 50000
	@if bash scripts/stores.sh status; then $(PY) -m bench.stores && $(PY) -m bench.trigger --s3 --models credit_risk --events 100000; \
	else echo "bench.stores and the S3 landing benchmark skipped: the stores are not up (make stores-up)"; fi

# --- training pipeline (kfp.local here, kfp.Client on a cluster) ----------------------------
.PHONY: demo-train
ARGS ?=

pipeline: $(STAMP) ## train MODEL with kfp.local (lands synthetic rows first if it has none); ARGS="--hp learning_rate=0.05"
	$(PY) -m pipelines.demo --land-only --models $(MODEL)
	$(PY) -m pipelines.training.run $(MODEL) $(ARGS)

compile: $(STAMP) ## write the KFP IR YAML of the training pipeline (build/pipelines/<model>.yaml) for the KFP UI
	$(PY) -m pipelines.training.compile --out build/pipelines

mlflow: $(STAMP) ## MLflow UI on 127.0.0.1:5000 over the pipeline's store (MLFLOW_TRACKING_URI)
	$(VENV)/bin/mlflow server --backend-store-uri $(MLFLOW_TRACKING_URI) \
	  --default-artifact-root $(CONSTRUCTOS_DATA_DIR)/mlflow/artifacts --host 127.0.0.1 --port 5000

demo: $(STAMP) ## the main job: data -> pipelines for all models -> serve the champions -> sample calls
	$(PY) -m pipelines.demo --port $(HTTP_PORT)

demo-train: $(STAMP) ## land synthetic data where missing, train every model, compare with the best achievable
	$(PY) -m pipelines.demo --train-only

# --- Kafka: broker, trigger, publisher -----------------------------------------------------
.PHONY: publish bench-trigger
ROWS ?= 5000
TRIGGER_METRICS_PORT ?= 8001

kafka-up: $(STAMP) ## start a local Kafka 4.x broker (jars in the tools cache, data in DATA_DIR/kafka) + topics
	$(if $(NODE_ADDRESS),KAFKA_NODE_LISTENER=$(NODE_ADDRESS):9094) bash scripts/kafka.sh up
	$(PY) -m pipelines.streaming.topics

kafka-down: ## stop the local Kafka broker (its data is kept)
	bash scripts/kafka.sh down

trigger: $(STAMP) ## run the Kafka trigger: land events, dead-letter bad ones, launch retraining; /metrics on TRIGGER_METRICS_PORT
	CONSTRUCTOS_TRIGGER_METRICS_PORT=$(TRIGGER_METRICS_PORT) $(PY) -m pipelines.streaming.trigger

publish: $(STAMP) ## send ROWS synthetic events of MODEL (or FILE=rows.csv|rows.parquet) to its topic
	$(PY) -m pipelines.streaming.publish $(MODEL) $(if $(FILE),--file $(FILE),--rows $(ROWS))

bench-trigger: $(STAMP) ## trigger throughput (100k events per model) and memory after 1M/10M landed ids (after kafka-up)
	$(PY) -m bench.trigger --events 100000
	$(PY) -m bench.trigger_memory --events 50000

# --- monitoring and the canary -------------------------------------------------------------
.PHONY: monitor canary prometheus-up prometheus-down
MONITOR_PORT ?= 8000
PROMETHEUS_PORT ?= 9090

monitor: $(STAMP) ## monitoring service on MONITOR_PORT: /events (payload logger), drift, live accuracy, /metrics
	$(PY) -m pipelines.monitoring --port $(MONITOR_PORT)

prometheus-up: $(STAMP) $(KUSTOMIZE) ## Prometheus on PROMETHEUS_PORT scraping serve, monitor and trigger as the manifests' ServiceMonitors/PodMonitors do
	@mkdir -p $(DATA_DIR)/prometheus
	$(PY) -m pipelines.manifests.scrape $(foreach isvc,credit-risk stock-demand lead-score,--target $(isvc)=127.0.0.1:$(HTTP_PORT)) \
	  --target monitoring=127.0.0.1:$(MONITOR_PORT) --target trigger=127.0.0.1:$(TRIGGER_METRICS_PORT) > $(DATA_DIR)/prometheus/prometheus.yml
	PROMETHEUS_PORT=$(PROMETHEUS_PORT) bash scripts/prometheus.sh up $(DATA_DIR)/prometheus/prometheus.yml

prometheus-down: ## stop the local Prometheus (its data is kept)
	bash scripts/prometheus.sh down

canary: $(STAMP) ## analyse MODEL's challenger vs champion (inference log on Kafka, or PROMETHEUS=url)
	$(PY) -m pipelines.rollout analyze $(MODEL) $(if $(PROMETHEUS),--prometheus $(PROMETHEUS))

# --- manifests, image, rollout -------------------------------------------------------------
.PHONY: kustomize image image-test pin-image deploy
BASE      ?=
IMAGE     ?= ghcr.io/constructos/ml-platform:$(shell sed -n 's/^ *newTag: "\(.*\)"/\1/p' manifests/base/platform/kustomization.yaml)
ENV       ?= staging

kustomize: $(KUSTOMIZE) ## install the pinned kustomize into the tools cache (needs Go)

$(KUSTOMIZE):
	GOBIN=$(dir $@) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

.PHONY: manifests
manifests: $(STAMP) ## render each model's InferenceService (per overlay) and KafkaTopics from feature_specs/*.yaml
	$(PY) -m pipelines.manifests.render

manifests-check: $(STAMP) $(KUSTOMIZE) ## fail if manifests are stale or a model lacks them; build, validate and lint every overlay
	$(PY) -m pipelines.manifests

image: ## build the platform image with buildah, no Docker engine (IMAGE=..., default: the pinned tag; BASE=... or a Debian base made here)
	BASE=$(BASE) bash scripts/image.sh build $(IMAGE)

image-test: $(STAMP) ## smoke-test the built IMAGE: predictors + trigger start, a V2 call, a compiled pipeline step, non-root, no compilers
	CONSTRUCTOS_TEST_IMAGE=$(IMAGE) $(HERMETIC) $(PY) -m pytest -m image tests/test_image.py

pin-image: $(KUSTOMIZE) ## pin IMAGE in the ENV overlay (CI: the image of this commit)
	cd manifests/overlays/$(ENV) && $(KUSTOMIZE) edit set image ghcr.io/constructos/ml-platform=$(IMAGE)

deploy: $(STAMP) $(KUSTOMIZE) ## check the overlay, then apply it server-side as field manager constructos-gitops (ENV=dev|staging|prod|node)
	$(PY) -m pipelines.manifests manifests/overlays/$(ENV)
	$(if $(filter node,$(ENV)),bash scripts/node.sh prepare $(IMAGE) && export KUBECONFIG=$(NODE_KUBECONFIG) &&) \
	  kubectl apply -k manifests/overlays/$(ENV) --server-side --field-manager=constructos-gitops
	$(if $(filter node,$(ENV)),bash scripts/node.sh wait-platform)

# --- a real Kubernetes API server for the cluster tests -------------------------------------
.PHONY: cluster-up cluster-down
# kube-apiserver is built from the Go module proxy once, into the tools cache (keyed by version).
export KUBE_VERSION ?= v1.31.4
export CONSTRUCTOS_KUBECONFIG ?= $(CONSTRUCTOS_DATA_DIR)/cluster/kubeconfig

cluster-up: ## kube-apiserver + etcd + the KServe/Strimzi/Prometheus Operator CRDs (no controllers, no kubelet)
	CLUSTER_DIR=$(patsubst %/,%,$(dir $(CONSTRUCTOS_KUBECONFIG))) bash scripts/cluster.sh up

cluster-down: ## stop the API server and etcd and delete their data
	CLUSTER_DIR=$(patsubst %/,%,$(dir $(CONSTRUCTOS_KUBECONFIG))) bash scripts/cluster.sh down

# --- a real single-node Kubernetes: the platform runs on it ----------------------------------
.PHONY: node-up node-down node-image node-status
# The host address the node's pods reach this machine's servers on (the broker, the stores);
# kafka-up and stores-up also listen there. Empty: no route, no node.
NODE_ADDRESS ?= $(shell bash scripts/node.sh address 2>/dev/null)
export NODE_DIR ?= $(CONSTRUCTOS_DATA_DIR)/node
export NODE_KUBECONFIG ?= $(NODE_DIR)/kubeconfig

node-up: $(STAMP) ## a real node: containerd, the Kubernetes control plane + kubelet + kube-proxy, CoreDNS, KServe's controller (as root; builds once: ~30 min cold, ~2 min warm)
	bash scripts/node.sh up

node-down: ## stop the node's processes and pods, put back the host's iptables, bridge and sysctls
	bash scripts/node.sh down

node-status: ## exit 0 when the node is Ready
	bash scripts/node.sh status

node-image: ## build the platform image (make image) and import it into the node's containerd
	$(MAKE) --no-print-directory image
	bash scripts/node.sh import $(IMAGE)

print-%: # the value of a make variable (tests ask for the pinned tools' paths)
	@echo $($*)

clean: ## remove build outputs (build/: compiled pipelines); data/ and the tools cache are kept
	rm -rf build

# --- production-like stores: PostgreSQL + S3 (versitygw) + MLflow on both ---------------------
.PHONY: stores-up stores-down pipeline-s3
export STORES_HOME ?= $(CONSTRUCTOS_DATA_DIR)/stores
export CONSTRUCTOS_STORES_ENV ?= $(STORES_HOME)/stores.env
STORES_ENV = set -a && . $(CONSTRUCTOS_STORES_ENV) && set +a

stores-up: $(STAMP) ## start PostgreSQL, an S3 server (versitygw, built once into the tools cache) and MLflow on both
	NODE_ADDRESS=$(NODE_ADDRESS) bash scripts/stores.sh up

stores-down: ## stop the stores of stores-up (their data is kept in STORES_HOME)
	bash scripts/stores.sh down

pipeline-s3: $(STAMP) ## make pipeline on the stores of stores-up: landing + artifacts in S3, MLflow on PostgreSQL + S3
	$(STORES_ENV) && export CONSTRUCTOS_LANDING_URI=$${CONSTRUCTOS_LANDING_URI:-s3://$$CONSTRUCTOS_STORES_BUCKET/landing} \
	  CONSTRUCTOS_ARTIFACTS_URI=$${CONSTRUCTOS_ARTIFACTS_URI:-s3://$$CONSTRUCTOS_STORES_BUCKET/artifacts} && \
	  $(MAKE) --no-print-directory pipeline


# --- the example ERP's broker: RabbitMQ for its Celery workers -------------------------------
.PHONY: rabbitmq-up rabbitmq-down
RABBITMQ_PORT ?= 55672

rabbitmq-up: ## start RabbitMQ (Debian's rabbitmq-server, installed when missing) on RABBITMQ_PORT, data in DATA_DIR/rabbitmq: the example ERP's Celery broker
	RABBITMQ_PORT=$(RABBITMQ_PORT) bash scripts/rabbitmq.sh up

rabbitmq-down: ## stop that RabbitMQ (its data is kept)
	RABBITMQ_PORT=$(RABBITMQ_PORT) bash scripts/rabbitmq.sh down
