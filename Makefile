# bertd top-level build. `make` builds, `make test` tests, `make run` starts the
# server on conf/bertd.yaml, `make bench` measures (BENCHMARKS.md), `make soak` soaks,
# `make install` installs.
# config.mk is written by ./configure; `make` runs it (and contrib/install-deps
# as root) when it is missing.

-include config.mk

# The version is written once, in debian/changelog's first line; bertd -v, bertd.pc,
# the man pages and the Erlang application directory take it from there.
VERSION := ${shell sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' debian/changelog}

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

.PHONY: all deps test unit run bench bench-quick bench-ab soak fuzz fuzz-build install install-service uninstall deb \
	clean distclean check-man
all: config.mk $(PROGRAMS) $(TOOLS) $(ERL_BEAMS) bin

# A changed configure runs again, with the options config.mk was written with.
config.mk: configure
	@contrib/install-deps
	./configure $(shell sed -n '1s/^# written by .\/configure//p' config.mk 2>/dev/null)

deps:
	@contrib/install-deps

# build/bin holds links to the current build's programs for scripts and tests.
bin: $(PROGRAMS) $(TOOLS)
	@mkdir -p build/bin
	@for p in $(PROGRAMS); do ln -sf "$(CURDIR)/$$p" build/bin/; done

$(BUILD)/%.o: %.cc config.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) -c $< -o $@

$(BUILD)/src/core/cli.o: CXXFLAGS_ALL += -DBERTD_VERSION='"$(VERSION)"'
$(BUILD)/src/core/cli.o: debian/changelog

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

# `make test` and `make run` build on every core (JOBS) unless make was given -j itself.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PAR = $(if $(filter -j% --jobserver%,$(MAKEFLAGS)),,-j$(JOBS))

test: deps config.mk
	@$(MAKE) --no-print-directory $(PAR) all $(BUILD)/unit-tests $(if $(FUZZ_CXX),fuzz-build)
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
run: deps config.mk
	@$(MAKE) --no-print-directory $(PAR) all
	@sh contrib/run-demo

bench: deps config.mk all
	@BERTD_BUILD=$(BUILD) python3 tests/bench/bench.py

# One case per kind at 1 s each: a smoke run of the report, not figures to publish.
bench-quick: deps config.mk all
	@BERTD_BUILD=$(BUILD) python3 tests/bench/bench.py --quick

# Two bertd builds side by side (BEFORE: a git revision, built once into build/ab/, or a bertd path):
# requests/s and the server's CPU per request, interleaved rounds, for a change's before and after.
bench-ab: deps config.mk all
	@test -n "$(BEFORE)" || { echo "usage: make bench-ab BEFORE=<git revision or bertd path>" >&2; exit 2; }
	@BERTD_BUILD=$(BUILD) python3 tests/bench/ab.py --before $(BEFORE)

# One million mixed requests; memory, descriptors and processes compared before and after.
SOAK_REQUESTS ?= 1000000
soak: deps config.mk all
	@BERTD_BUILD=$(BUILD) python3 tests/integration/soak.py --requests $(SOAK_REQUESTS)

# --- install -------------------------------------------------------------------
# Every directory can be set on the command line; debian/rules sets Debian's.
DESTDIR ?=
BINDIR = $(PREFIX)/bin
SBINDIR = $(PREFIX)/sbin
MANDIR = $(PREFIX)/share/man
LIBDIR = $(PREFIX)/lib
INCDIR = $(PREFIX)/include
DATADIR = $(PREFIX)/share/bertd
# The Ruby and Python libraries (found with RUBYLIB / PYTHONPATH unless these are the
# interpreters' own directories, e.g. /usr/lib/ruby/vendor_ruby, /usr/lib/python3/dist-packages).
RUBYLIBDIR = $(DATADIR)/ruby/lib
PYTHONLIBDIR = $(DATADIR)/python
EXAMPLESDIR = $(DATADIR)/examples
# An Erlang application directory. bertd finds bertd_native.beam in its ebin (from
# SBINDIR/../lib/erlang/lib/bertd-VERSION/ebin); Erlang nodes find bertd_client there when
# it is their own lib directory (PREFIX=/usr), else with ERL_LIBS=PREFIX/lib/erlang/lib.
ERLAPPDIR = $(PREFIX)/lib/erlang/lib/bertd-$(VERSION)
# install-service: the unit, the init script and its defaults, logrotate.
SYSTEMDUNITDIR = $(LIBDIR)/systemd/system
INITDIR = /etc/init.d
DEFAULTDIR = /etc/default
LOGROTATEDIR = /etc/logrotate.d
# The contrib files name the default prefix's paths; installed copies name the real ones.
CONTRIB_PATHS = sed -e 's|/usr/local/sbin/|$(SBINDIR)/|g' -e 's|/usr/local/etc/|$(SYSCONFDIR)/|g'
MAN_VERSION = sed -e '1s|"bertd [^"]*"|"bertd $(VERSION)"|'
ERL_MODULES = $(basename $(notdir $(ERL_BEAMS)))
# bertd.pc names libdir from ${exec_prefix}, so pkg-config --define-variable=prefix= moves it too.
PC_LIBDIR = $(patsubst $(PREFIX)/%,$${exec_prefix}/%,$(LIBDIR))
empty :=
space := $(empty) $(empty)
comma := ,
ERL_APP = {application, bertd, [{description, "bertd: BERT-RPC server modules"}, {vsn, "$(VERSION)"}, \
	{modules, [$(subst $(space),$(comma) ,$(ERL_MODULES))]}, {registered, []}, {applications, [kernel, stdlib]}]}.

install: all $(MODLIB)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(SYSCONFDIR)/bertd $(DESTDIR)$(LIBDIR)/pkgconfig \
		$(DESTDIR)$(INCDIR)/bertd $(DESTDIR)$(ERLAPPDIR)/ebin
	install -m 755 $(BUILD)/bertd $(DESTDIR)$(SBINDIR)/bertd
	if [ -f $(BUILD)/bertc ]; then install -m 755 $(BUILD)/bertc $(DESTDIR)$(BINDIR)/bertc; fi
	for m in man/*.[158]; do $(MAN_VERSION) "$$m" > $(DESTDIR)$(MANDIR)/man$${m##*.}/$${m#man/}; \
		chmod 644 $(DESTDIR)$(MANDIR)/man$${m##*.}/$${m#man/}; done
	for c in conf/*; do install -m 644 "$$c" $(DESTDIR)$(SYSCONFDIR)/bertd/; done
	install -m 644 $(MODLIB) $(DESTDIR)$(LIBDIR)/libbertd-module.a
	cd src && find bert -name '*.h' -exec install -D -m 644 {} $(DESTDIR)$(INCDIR)/bertd/{} \;
	cd modules/cpp/include && find . -name '*.h' -exec install -D -m 644 {} $(DESTDIR)$(INCDIR)/bertd/{} \;
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(PC_LIBDIR)|g' -e 's|@EI_DIR@|$(EI_DIR)|g' \
		-e 's|@VERSION@|$(VERSION)|g' modules/cpp/bertd.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/bertd.pc
	cd modules/ruby/lib && find . -name '*.rb' -exec install -D -m 644 {} $(DESTDIR)$(RUBYLIBDIR)/{} \;
	cd modules/python && find bertd -name '*.py' -exec install -D -m 644 {} $(DESTDIR)$(PYTHONLIBDIR)/{} \;
	for l in ruby python; do for f in modules/$$l/examples/*; do \
		install -D -m 644 "$$f" $(DESTDIR)$(EXAMPLESDIR)/$$l/$${f##*/}; done; done
	for b in $(ERL_BEAMS); do install -m 644 "$$b" $(DESTDIR)$(ERLAPPDIR)/ebin/; done
	echo '$(ERL_APP)' > $(DESTDIR)$(ERLAPPDIR)/ebin/bertd.app

install-service:
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(INITDIR) $(DESTDIR)$(DEFAULTDIR) $(DESTDIR)$(LOGROTATEDIR)
	$(CONTRIB_PATHS) contrib/systemd/bertd.service > $(DESTDIR)$(SYSTEMDUNITDIR)/bertd.service
	$(CONTRIB_PATHS) contrib/init.d/bertd > $(DESTDIR)$(INITDIR)/bertd
	$(CONTRIB_PATHS) contrib/default/bertd > $(DESTDIR)$(DEFAULTDIR)/bertd
	$(CONTRIB_PATHS) contrib/logrotate.d/bertd > $(DESTDIR)$(LOGROTATEDIR)/bertd
	chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/bertd.service $(DESTDIR)$(DEFAULTDIR)/bertd $(DESTDIR)$(LOGROTATEDIR)/bertd
	chmod 755 $(DESTDIR)$(INITDIR)/bertd

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/bertd $(DESTDIR)$(BINDIR)/bertc $(DESTDIR)$(MANDIR)/man8/bertd.8 \
		$(DESTDIR)$(MANDIR)/man5/bertd.yaml.5 $(DESTDIR)$(MANDIR)/man1/bertc.1 $(DESTDIR)$(LIBDIR)/libbertd-module.a \
		$(DESTDIR)$(LIBDIR)/pkgconfig/bertd.pc $(DESTDIR)$(SYSTEMDUNITDIR)/bertd.service $(DESTDIR)$(INITDIR)/bertd \
		$(DESTDIR)$(DEFAULTDIR)/bertd $(DESTDIR)$(LOGROTATEDIR)/bertd
	cd modules/ruby/lib && find . -name '*.rb' -exec rm -f $(DESTDIR)$(RUBYLIBDIR)/{} \;
	rm -rf $(DESTDIR)$(INCDIR)/bertd $(DESTDIR)$(DATADIR) $(DESTDIR)$(ERLAPPDIR) $(DESTDIR)$(PYTHONLIBDIR)/bertd \
		$(DESTDIR)$(RUBYLIBDIR)/bertd

# --- Debian packages -------------------------------------------------------------
# make deb: build/deb/bertd_VERSION_ARCH.deb and the libraries' packages (ruby-bertd,
# python3-bertd, libbertd-dev), with debhelper from debian/. It packages this tree's build
# (objects already compiled are not compiled again), downloads nothing, and is remade only
# when one of its inputs changed.
DEB_DIR = $(BUILD)/deb
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)
DEB = $(DEB_DIR)/bertd_$(VERSION)_$(DEB_ARCH).deb
DEB_OUTPUTS = debian/files debian/debhelper-build-stamp debian/%.substvars debian/%.debhelper debian/%.log
DEB_INPUTS := $(filter-out $(DEB_OUTPUTS),$(shell find debian -maxdepth 1 -type f) debian/source/format) \
	README.md $(wildcard modules/*/README.md) \
	$(shell find contrib conf man modules/ruby/lib modules/ruby/examples modules/python/bertd \
		modules/python/examples modules/cpp/include modules/cpp/bertd.pc.in src/bert -type f \
		! -name '*.pyc' ! -name '*.cc')
deb: config.mk $(DEB)
$(DEB): $(PROGRAMS) $(ERL_BEAMS) $(MODLIB) $(DEB_INPUTS) Makefile
	@mkdir -p $(DEB_DIR)
	+dpkg-buildpackage -b -us -uc --buildinfo-file=$(DEB_DIR)/bertd_$(VERSION)_$(DEB_ARCH).buildinfo \
		--buildinfo-option=-u$(DEB_DIR) --changes-file=$(DEB_DIR)/bertd_$(VERSION)_$(DEB_ARCH).changes \
		--changes-option=-u$(DEB_DIR)
	@touch $@

clean:
	rm -rf build

distclean: clean
	rm -f config.mk

-include $(shell find build -name '*.d' 2>/dev/null)
