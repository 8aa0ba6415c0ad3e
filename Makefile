# evloop.h - build, test, demo and install. The library itself is the header: nothing here is
# needed to use it, only to test it and to run the examples.
CC      ?= cc
CXX     ?= c++
CFLAGS  ?= -O2 -g
WARN    := -std=c99 -Wall -Wextra -Wpedantic -Werror
LDLIBS  := -lpthread
BUILD   ?= build
PREFIX  ?= /usr/local
PYTHON  ?= python3
SANFLAGS ?=
LDFLAGS ?=

TEST_SRC    := $(wildcard tests/test_*.c)
EXAMPLE_SRC := $(wildcard examples/*.c)
TESTS       := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
EXAMPLES    := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRC))

.PHONY: all test test-asan test-tsan test-valgrind test-cross test-compile test-static fuzz \
        demo install uninstall clean

all: $(TESTS) $(EXAMPLES)

$(BUILD)/tests/%: tests/%.c evloop.h tests/check.h
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(SANFLAGS) $(LDFLAGS) -I. $< -o $@ $(LDLIBS)

$(BUILD)/examples/%: examples/%.c evloop.h
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(SANFLAGS) $(LDFLAGS) -I. $< -o $@ $(LDLIBS)

# The clients the examples' tests drive them with: wrk (HTTP), redis-cli and redis-benchmark
# (RESP). Installed with apt-get when missing.
.PHONY: clients
clients:
	@command -v wrk >/dev/null && command -v redis-cli >/dev/null && \
	  command -v redis-benchmark >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk redis-tools; }

# The whole suite: every C test case on every backend, the compile checks, the examples.
test: all clients
	EVL_BUILD=$(BUILD) EVL_SANFLAGS="$(SANFLAGS)" $(PYTHON) -m unittest discover -s tests \
	  -p 'test_*.py' $(TESTFLAGS)

# AddressSanitizer + UndefinedBehaviorSanitizer: any report fails the test.
test-asan:
	$(MAKE) BUILD=build/asan CFLAGS="-O1 -g" \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  test

# ThreadSanitizer (the loop's cross-thread paths).
test-tsan:
	$(MAKE) BUILD=build/tsan CFLAGS="-O1 -g" SANFLAGS="-fsanitize=thread" test

# Valgrind memcheck: errors or leaks fail the test. Valgrind runs one thread at a time;
# --fair-sched=yes hands the CPU round-robin, so a thread that wakes (the stall watchdog)
# gets to run while another spins, as on real cores (without it the watchdog cases fail under
# load: 4 of 10 runs).
test-valgrind:
	$(MAKE) BUILD=build/valgrind CFLAGS="-O1 -g" all
	EVL_BUILD=build/valgrind EVL_TEST_TIMEOUT_SCALE=20 \
	  EVL_TEST_WRAPPER="valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect" \
	  $(PYTHON) -m unittest discover -s tests -p 'test_*.py' $(TESTFLAGS)

# The behaviour tests on the other architectures (cross compiler + qemu-user), on one backend:
# the context switch is what differs between them. Then the ucontext fallback, natively. The
# cross builds link statically: qemu-i386 7.2 hangs in pthread_create with Debian's dynamic
# i386 glibc (a static build runs), and static binaries need no sysroot at run time.
CROSS := aarch64-linux-gnu:qemu-aarch64 arm-linux-gnueabihf:qemu-arm \
         riscv64-linux-gnu:qemu-riscv64 i686-linux-gnu:qemu-i386
CROSS_TESTS := -p 'test_[ct][oa]*.py'
test-cross:
	+@for spec in $(CROSS); do triple=$${spec%%:*}; emu=$${spec##*:}; \
	  echo "=== $$triple under $$emu"; \
	  $(MAKE) -s CC=$$triple-gcc LDFLAGS=-static BUILD=build/cross-$$triple all || exit 1; \
	  EVL_BUILD=build/cross-$$triple EVL_TEST_EMULATOR="$$emu -L /usr/$$triple" \
	    EVL_TEST_BACKENDS=epoll EVL_TEST_TIMEOUT_SCALE=10 \
	    $(PYTHON) -m unittest discover -s tests $(CROSS_TESTS) || exit 1; \
	done
	@echo "=== ucontext fallback"
	$(MAKE) -s BUILD=build/ucontext CFLAGS="-O2 -g -DEVL_CTX_UCONTEXT" all
	EVL_BUILD=build/ucontext $(PYTHON) -m unittest discover -s tests $(CROSS_TESTS)

# The full compile matrix: gcc and clang, C99/C11/C++11/C++17 under strict warnings, glibc and
# musl, i386 and three other architectures, every EVL_NO_* switch, linkage, visibility, -O0 and
# -O3 -flto; each configuration runs what it built (tests/test_build.py is the quick subset).
test-compile:
	$(PYTHON) tests/compile_matrix.py

# cppcheck and clang-tidy (the Clang Static Analyzer included) on evloop.h with the
# implementation enabled: zero findings, each suppression with its reason in the script.
test-static:
	$(PYTHON) tests/static_analysis.py

# The libFuzzer target (clang) against its reference model: FUZZ_TIME seconds from the seed
# corpus, one process. New inputs collect in $(BUILD)/fuzz/corpus; a failing one is written to
# $(BUILD)/fuzz/crash-*. tests/fuzz/README.md tells what it checks.
FUZZ_TIME ?= 60
fuzz:
	@mkdir -p $(BUILD)/fuzz/corpus
	clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_loop.c \
	  -o $(BUILD)/fuzz/fuzz_loop -lpthread
	$(BUILD)/fuzz/fuzz_loop $(BUILD)/fuzz/corpus tests/fuzz/corpus -max_total_time=$(FUZZ_TIME) \
	  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/

# Side by side with libuv, libev, libevent, asyncio, uvloop and Boost.Context: bench/README.md.
.PHONY: bench bench-quick
bench:
	$(PYTHON) bench/run.py
	command -v redis-server >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; }
	$(MAKE) -s $(BUILD)/examples/resp
	$(PYTHON) bench/resp_bench.py | tee bench/resp_results.md

bench-quick:
	$(PYTHON) bench/run.py --quick

# The HTTP example driven for two seconds by an evloop client, then shut down with SIGTERM.
demo: $(BUILD)/examples/demo $(BUILD)/examples/http
	./$(BUILD)/examples/demo

install:
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 evloop.h $(DESTDIR)$(PREFIX)/include/evloop.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e "s|@VERSION@|$$(sed -n 's/^#define EVLOOP_VERSION \"\(.*\)\"/\1/p' evloop.h)|" \
	  evloop.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/evloop.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/evloop.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/evloop.pc

clean:
	rm -rf build
