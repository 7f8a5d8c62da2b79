# gradcheck skips its zero-cotangent check
# file: core/gradcheck.cpp
# tests: Gradcheck.*
s/if (opt\.check_zero_grad) {/if (false) {/
