# The commands README.md gives. `make test` is what CI runs (.ci/run).
GO ?= go

.PHONY: test build quickstart bench proto

build:
	$(GO) build -o bin/ferry ./cmd/ferry

test: build
	@echo "== gofmt"; out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@echo "== go vet"; $(GO) vet ./...
	@echo "== ferry validate pipelines/"; ./bin/ferry validate $$(find pipelines -name '*.yaml' | sort)
	@echo "== go test -race"; $(GO) test -race -count=1 -timeout 20m ./...

quickstart:
	$(GO) run ./cmd/ferry run pipelines/quickstart.yaml

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 5 ./...

proto:
	$(GO) generate ./core/proto
