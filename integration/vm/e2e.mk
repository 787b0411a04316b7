# The end-to-end suite in the VM (issue 5); included by vm.mk. See integration/vm/README.md.
# payloads/e2e/run.sh builds the release binaries and test executables, stages them under
# $(CARGO_TARGET_DIR or target)/vm-e2e and boots one VM per entry of VM_E2E_BOOTS (a
# configuration's suites, or `features`: the GPU/watch and RDMA payloads); logs in
# $(VM_RESULTS)/e2e/<boot>/, the summary in $(VM_RESULTS)/e2e/timings.txt.
# VM_E2E_TIMEOUT is per boot.
VM_E2E_TIMEOUT ?= 3600
VM_E2E_BOOTS   ?= runc-systemd runc-cgroupfs crun-systemd features
VM_E2E_ARGS    ?=

.PHONY: test-vm-e2e

test-vm-e2e: vm-image
	DPH_VM_TIMEOUT=$(VM_E2E_TIMEOUT) DPH_E2E_BOOTS="$(VM_E2E_BOOTS)" $(VM_DIR)/payloads/e2e/run.sh --results $(VM_RESULTS)/e2e \
		$(VM_RUN_ARGS) $(VM_E2E_ARGS)
