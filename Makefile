# crdgo — make run trains the demo on embedded defaults, make test is what CI runs.
# Both install what a fresh Debian machine lacks (Debian packages via apt-get) first.

GO      ?= go
BIN     := bin/crdgo
PKGS    := ./...
# Debian packages: OpenBLAS for the cgo GEMM (the pthread flavour, so PyTorch's
# libblas.so.3 is OpenBLAS too), PyTorch/NumPy/SciPy for the reference checks,
# Chromium for the coordinator's live-page browser test.
DEB     := libopenblas-dev libopenblas0-pthread python3-torch python3-numpy python3-scipy python3-pil chromium
PY      := /usr/bin/python3

.PHONY: all run cluster test deps build vet minio unit race nocgo bench ablation screenshot clean

all: build

deps:
	@missing=""; for p in $(DEB); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(GO) build -o $(BIN) ./cmd/crdgo

# The main job: the demo recipe (synthetic edges2shapes, generated on first use)
# into runs/demo. Interrupted? Run it again: it resumes from the newest checkpoint.
run: build
	$(BIN) train --recipe demo --data-root data --out runs/demo --resume

# The real cluster on this machine: a NATS server, 3 raft coordinators and 3
# worker nodes, each its own process, on the demo; the live page's address is
# printed. Every run gets a fresh run folder (a cluster never reuses one).
cluster: build
	$(BIN) cluster up --coordinators 3 --nodes 3 --recipe demo --data-root data \
		--out runs/cluster-$$(date +%Y%m%d-%H%M%S) --max-steps 300 --checkpoint-every 100

vet:
	$(GO) vet $(PKGS)

# The MinIO server the storage tests run against: built once (about 5 minutes of
# 2 cores) into ~/.cache/crdgo/minio-<version>, a separate program never linked into
# crdgo (AGPLv3). CRDGO_CI=1: a failed build fails here instead of skipping tests.
minio:
	CRDGO_CI=1 $(GO) test -count=1 -timeout 45m -run '^TestServer$$' ./storage/miniotest

unit:
	$(GO) test -count=1 -timeout 30m $(PKGS)

# Packages with goroutines of their own run again under the race detector.
# node trains under it with -short: every data-parallel path, a few steps;
# launch runs its multi-process cluster for a few steps.
race:
	$(GO) test -race -count=1 -timeout 30m ./crd ./crd/ablation ./crd/data/... ./crd/tensor/... ./allreduce/... ./natsd/... ./coordinator/... ./storage/... ./runlock/...
	$(GO) test -race -short -count=1 -timeout 30m ./crd/nn/... ./node/... ./launch/...

# The pure-Go path must keep working without cgo.
nocgo:
	CGO_ENABLED=0 $(GO) build ./...
	CGO_ENABLED=0 $(GO) test -count=1 -timeout 30m ./crd/tensor/... ./crd/nn/...

test: deps vet minio unit race nocgo

# The side-by-side benchmarks of README's Results (several minutes).
bench: build
	$(BIN) bench engine
	$(BIN) bench step
	$(BIN) bench allreduce
	$(BIN) bench storage

# README's "Does CRD work? Ablations": every variant of demo-ngf4 (the demo
# with its narrow ngf 16 → 4 pair) and demo-cyclegan (docs/crd.md §11) over
# ABL_SEEDS seeds, ABL_JOBS runs at a time, then the
# report (runs/ablation/report.md, .json, psnr.png). Not part of make test.
# Interrupted? Run it again: finished runs are skipped, the others resume.
# The budgets, in steps of the online schedule: demo-ngf4 ABL_DEMO_STEPS (teacher
# and student each train every step); demo-cyclegan ABL_CYCLE_STEPS (its first
# 2 teacher epochs, 800 steps, then 400 steps of their student round).
ABL_OUT          ?= runs/ablation
ABL_SEEDS        ?= 3
ABL_JOBS         ?= 2
ABL_DEMO_STEPS   ?= 300
ABL_DEMO_EVAL    ?= 100
ABL_CYCLE_STEPS  ?= 1200
ABL_CYCLE_EVAL   ?= 200
ablation: build
	$(BIN) ablate --recipe demo-ngf4 --seeds $(ABL_SEEDS) --jobs $(ABL_JOBS) --max-steps $(ABL_DEMO_STEPS) \
		--eval-every $(ABL_DEMO_EVAL) --data-root data --out $(ABL_OUT)/demo-ngf4
	$(BIN) ablate --recipe demo-cyclegan --seeds $(ABL_SEEDS) --jobs $(ABL_JOBS) --max-steps $(ABL_CYCLE_STEPS) \
		--eval-every $(ABL_CYCLE_EVAL) --data-root data --out $(ABL_OUT)/demo-cyclegan
	$(BIN) report $(ABL_OUT)/demo-ngf4 $(ABL_OUT)/demo-cyclegan --json $(ABL_OUT)/report.json \
		--plot $(ABL_OUT)/psnr.png > $(ABL_OUT)/report.md.tmp
	mv $(ABL_OUT)/report.md.tmp $(ABL_OUT)/report.md
	cat $(ABL_OUT)/report.md

# The README's picture of the live page: headless Chromium on a test cluster.
screenshot: deps
	$(GO) test -count=1 -run TestLivePageInBrowser ./coordinator -screenshot $(CURDIR)/docs/cluster-live.png

clean:
	rm -rf bin
