# VM harness targets; included by the top-level Makefile (`-include integration/vm/vm.mk`).
# See integration/vm/README.md.
VM_DIR      := integration/vm
VM_TIMEOUT  ?= 900
VM_MEM      ?= 4096
VM_RESULTS  ?= $(VM_DIR)/results
VM_RUN_ARGS ?=

.PHONY: vm-deps vm-image test-vm test-vm-smoke vm-shell

vm-deps:
	$(VM_DIR)/install-deps.sh

# Builds the image only when its inputs changed (cached under integration/vm/cache/).
vm-image: vm-deps
	$(VM_DIR)/build-image.sh

# The smoke payload (runtimes, cgroup v2, DPDK), then the end-to-end suite (e2e.mk); each
# keeps its logs in $(VM_RESULTS)/<name>.
test-vm: test-vm-smoke test-vm-e2e

test-vm-smoke: vm-image
	$(VM_DIR)/run.sh --timeout $(VM_TIMEOUT) --mem $(VM_MEM) --results $(VM_RESULTS)/smoke \
		$(VM_RUN_ARGS) $(VM_DIR)/smoke

# Interactive root shell in the VM with PAYLOAD (default: the smoke payload) at /payload.
vm-shell: vm-image
	$(VM_DIR)/run.sh --interactive --mem $(VM_MEM) $(or $(PAYLOAD),$(VM_DIR)/smoke)

-include $(VM_DIR)/e2e.mk
