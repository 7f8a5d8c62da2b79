# gradcheck skips its determinism check
# file: core/gradcheck.cpp
# tests: Gradcheck.*
s/if (opt\.check_determinism) {/if (false) {/
