# The commands README.md gives. `make test` is what CI runs (.ci/run): it
# starts Jaeger for the tracing tests, then runs `make check`.
GO ?= go

.PHONY: test check build quickstart bench proto jaeger fuzz

build:
	$(GO) build -o bin/ferry ./cmd/ferry

test:
	scripts/test.sh

# check: the tests without starting Jaeger (the tracing tests skip unless
# FERRY_JAEGER_QUERY and FERRY_OTLP_ENDPOINT name a running one).
check: build
	@echo "== gofmt"; out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@echo "== go vet"; $(GO) vet ./...
	@echo "== ferry validate pipelines/"; ./bin/ferry validate $$(find pipelines -name '*.yaml' | sort)
	@echo "== go test -race (scripts/gotest.sh: three streams side by side)"; GO=$(GO) scripts/gotest.sh
	@echo "== fuzz targets, a bounded count of executions each"; GO=$(GO) scripts/fuzz.sh
	@echo "== bench/ (the JetStream comparison harness, its own module)"; cd bench && $(GO) vet -mod=mod ./... && $(GO) test -mod=mod -count=1 ./...

quickstart:
	$(GO) run ./cmd/ferry run pipelines/quickstart.yaml

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 5 ./...

proto:
	$(GO) generate ./core/proto

# Every fuzz target for a while each (FUZZTIME, default 1m).
fuzz:
	GO=$(GO) scripts/fuzz.sh $${FUZZTIME:-1m}

# Jaeger for the tracing tests, built once (7–9 min cold) and started on
# 127.0.0.1; prints the environment the tests read:
#   eval "$$(scripts/jaeger.sh start)"   (or: make jaeger, then export it)
jaeger:
	@scripts/jaeger.sh start
