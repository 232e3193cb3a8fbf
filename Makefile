# bertd top-level build. `make` builds, `make test` tests, `make run` starts the
# server on conf/bertd.yaml, `make bench` measures (BENCHMARKS.md), `make soak` soaks,
# `make install` installs.
# config.mk is written by ./configure; `make` runs it (and contrib/install-deps
# as root) when it is missing.

-include config.mk

SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD := build/san
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD := build/rel
SAN_FLAGS :=
endif

OPT ?= -O2 -g
CXXFLAGS_ALL = -std=c++20 $(OPT) -Wall -Wextra -Werror=return-type -pthread -MMD -MP \
	-Isrc -Imodules/cpp/include $(DEPS_CFLAGS) $(SAN_FLAGS) $(USER_CXXFLAGS)
LDFLAGS_ALL = -pthread $(SAN_FLAGS) $(USER_LDFLAGS)

# The server library: everything under src/ except the program entry points.
LIB_SRC := $(filter-out src/main.cc src/bertc.cc,$(shell find src -name '*.cc' | sort))
LIB_OBJ := $(LIB_SRC:%.cc=$(BUILD)/%.o)
LIB := $(BUILD)/libbertd.a

# The C++ handler/client library (modules/cpp), on the codec.
MOD_SRC := $(shell find modules/cpp/src -name '*.cc' 2>/dev/null | sort)
MOD_OBJ := $(MOD_SRC:%.cc=$(BUILD)/%.o)
MODLIB := $(BUILD)/libbertd-module.a

UNIT_SRC := $(shell find tests/unit -name '*.cc' | sort)
UNIT_OBJ := $(UNIT_SRC:%.cc=$(BUILD)/%.o)

# Stand-alone tools built from one .cc each (test handlers, bench tools, diff test).
TOOL_SRC := $(shell find tests/handlers tests/bench tests/diff tests/clients -name '*.cc' 2>/dev/null | sort)
TOOLS := $(TOOL_SRC:%.cc=$(BUILD)/%)

PROGRAMS := $(BUILD)/bertd $(if $(wildcard src/bertc.cc),$(BUILD)/bertc)
ERL_BEAMS := $(patsubst modules/erlang/%.erl,$(BUILD)/ebin/%.beam,$(wildcard modules/erlang/*.erl))

# Keep objects of stand-alone tools: they are intermediate files to make.
.SECONDARY:

.PHONY: all deps test unit run bench bench-quick soak fuzz fuzz-build install uninstall clean distclean check-man
all: config.mk $(PROGRAMS) $(TOOLS) $(ERL_BEAMS) bin

config.mk:
	@contrib/install-deps
	./configure

deps:
	@contrib/install-deps

# build/bin holds links to the current build's programs for scripts and tests.
bin: $(PROGRAMS) $(TOOLS)
	@mkdir -p build/bin
	@for p in $(PROGRAMS); do ln -sf "$(CURDIR)/$$p" build/bin/; done

$(BUILD)/%.o: %.cc config.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(MODLIB): $(MOD_OBJ) $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/bertd: $(BUILD)/src/main.o $(LIB)
	$(CXX) $(LDFLAGS_ALL) -o $@ $^ $(DEPS_LIBS)

$(BUILD)/bertc: $(BUILD)/src/bertc.o $(MODLIB)
	$(CXX) $(LDFLAGS_ALL) -o $@ $^ $(DEPS_LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(MODLIB)
	$(CXX) $(LDFLAGS_ALL) -o $@ $^ $(DEPS_LIBS)

$(BUILD)/unit-tests: $(UNIT_OBJ) $(LIB)
	$(CXX) $(LDFLAGS_ALL) -o $@ $^ $(CPPUTEST_LIBS) $(DEPS_LIBS)

$(BUILD)/tests/unit/%.o: tests/unit/%.cc config.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) $(CPPUTEST_CFLAGS) -c $< -o $@

$(BUILD)/ebin/%.beam: modules/erlang/%.erl
	@mkdir -p $(dir $@)
	erlc -o $(dir $@) $<

# --- tests -----------------------------------------------------------------
unit: config.mk $(BUILD)/unit-tests
	$(BUILD)/unit-tests

test: deps config.mk all $(BUILD)/unit-tests $(if $(FUZZ_CXX),fuzz-build)
	@BERTD_BUILD=$(BUILD) python3 tests/run.py

# --- fuzzing (clang + libFuzzer; configure finds them) ---------------------
# The server library is compiled once with the fuzzers' instrumentation into an
# archive; each target links only the objects it needs.
FUZZ_SRC := $(wildcard tests/fuzz/*.cc)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.cc=build/fuzz/%)
FUZZ_FLAGS = -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-Isrc $(DEPS_CFLAGS) -MMD -MP
FUZZ_OBJ := $(LIB_SRC:%.cc=build/fuzz/obj/%.o)
FUZZ_SECONDS ?= 60
fuzz-build: $(FUZZ_BIN)
build/fuzz/obj/%.o: %.cc config.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/libbertd-fuzz.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^
build/fuzz/%: tests/fuzz/%.cc build/fuzz/libbertd-fuzz.a config.mk
	@mkdir -p build/fuzz
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/libbertd-fuzz.a $(DEPS_LIBS)
fuzz: config.mk fuzz-build
	@for f in $(FUZZ_BIN); do \
		name=$$(basename $$f); mkdir -p build/fuzz/corpus-$$name; \
		echo "== fuzzing $$name for $(FUZZ_SECONDS)s"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 -artifact_prefix=build/fuzz/ \
			build/fuzz/corpus-$$name tests/fuzz/seeds 2>&1 | grep -E 'stat::number_of_executed_units|ERROR|SUMMARY|Done' ; \
	done

# --- run and bench -----------------------------------------------------------
run: deps config.mk all
	@sh contrib/run-demo

bench: deps config.mk all
	@BERTD_BUILD=$(BUILD) python3 tests/bench/bench.py

# One case per kind at 1 s each: a smoke run of the report, not figures to publish.
bench-quick: deps config.mk all
	@BERTD_BUILD=$(BUILD) python3 tests/bench/bench.py --quick

# One million mixed requests; memory, descriptors and processes compared before and after.
SOAK_REQUESTS ?= 1000000
soak: deps config.mk all
	@BERTD_BUILD=$(BUILD) python3 tests/integration/soak.py --requests $(SOAK_REQUESTS)

# --- install -------------------------------------------------------------------
DESTDIR ?=
BINDIR = $(PREFIX)/bin
SBINDIR = $(PREFIX)/sbin
MANDIR = $(PREFIX)/share/man
LIBDIR = $(PREFIX)/lib
INCDIR = $(PREFIX)/include
DATADIR = $(PREFIX)/share/bertd
install: all $(MODLIB)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(SYSCONFDIR)/bertd $(DESTDIR)$(DATADIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)/bertd
	install -m 755 $(BUILD)/bertd $(DESTDIR)$(SBINDIR)/bertd
	if [ -f $(BUILD)/bertc ]; then install -m 755 $(BUILD)/bertc $(DESTDIR)$(BINDIR)/bertc; fi
	for m in man/*.8; do [ -f "$$m" ] && install -m 644 "$$m" $(DESTDIR)$(MANDIR)/man8/; done; true
	for m in man/*.5; do [ -f "$$m" ] && install -m 644 "$$m" $(DESTDIR)$(MANDIR)/man5/; done; true
	for c in conf/*; do [ -f "$$c" ] && install -m 644 "$$c" $(DESTDIR)$(SYSCONFDIR)/bertd/; done; true
	install -m 644 $(MODLIB) $(DESTDIR)$(LIBDIR)/libbertd-module.a
	cp -r src/bert $(DESTDIR)$(INCDIR)/bertd/ && find $(DESTDIR)$(INCDIR)/bertd -name '*.cc' -delete
	if [ -d modules/cpp/include ]; then cp -r modules/cpp/include/. $(DESTDIR)$(INCDIR)/bertd/; fi
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@EI_DIR@|$(EI_DIR)|g' modules/cpp/bertd.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/bertd.pc
	for d in modules/ruby modules/python modules/erlang; do [ -d "$$d" ] && cp -r "$$d" $(DESTDIR)$(DATADIR)/; done; true
	rm -rf $(DESTDIR)$(DATADIR)/*/tests $(DESTDIR)$(DATADIR)/*/*/__pycache__
	# The server finds bertd_native.beam in share/bertd/ebin; Erlang clients use share/bertd/erlang/ebin.
	install -d $(DESTDIR)$(DATADIR)/ebin $(DESTDIR)$(DATADIR)/erlang/ebin
	for b in $(ERL_BEAMS); do install -m 644 "$$b" $(DESTDIR)$(DATADIR)/ebin/; \
		install -m 644 "$$b" $(DESTDIR)$(DATADIR)/erlang/ebin/; done; true

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/bertd $(DESTDIR)$(BINDIR)/bertc $(DESTDIR)$(MANDIR)/man8/bertd.8 \
		$(DESTDIR)$(MANDIR)/man5/bertd.yaml.5 $(DESTDIR)$(LIBDIR)/libbertd-module.a \
		$(DESTDIR)$(LIBDIR)/pkgconfig/bertd.pc
	rm -rf $(DESTDIR)$(INCDIR)/bertd $(DESTDIR)$(DATADIR)

clean:
	rm -rf build

distclean: clean
	rm -f config.mk

-include $(shell find build -name '*.d' 2>/dev/null)
