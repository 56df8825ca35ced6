/* backend.c - which GPU backends this build has (backend.h), all derived from the one table
 * EM_BACKEND_TABLE: adding a backend adds nothing here. */
#include "backend.h"

#include <stdio.h>
#include <string.h>

/* EM_BUILT(MACRO) is 1 when MACRO is defined as 1 (or with no value: -DMACRO, what CMake
 * passes), else 0. `#if defined(...)` cannot be written inside a macro expansion, so the row's
 * enable macro is tested by what it expands to: MACRO=1 turns EM_PROBE_##MACRO into
 * EM_PROBE_1, which is "0," and shifts a 1 into second place; an undefined MACRO leaves an
 * unknown identifier and the 0 there. (The Linux kernel's IS_ENABLED works the same way.)
 * EM_EXPAND gives the older MSVC preprocessor, which passes an argument holding a comma as one
 * argument, a rescan that splits it. */
#define EM_EXPAND(x) x
#define EM_PROBE_1 0,
#define EM_SECOND(a, b, ...) b
#define EM_BUILT(macro) EM_BUILT_(macro)
#define EM_BUILT_(value) EM_BUILT__(EM_PROBE_##value)
#define EM_BUILT__(probe) EM_EXPAND(EM_SECOND(probe 1, 0, ~))

/* EM_IF(EM_BUILT(MACRO))(then, else): one of two token sequences, chosen by the preprocessor,
 * so that a backend not built in is never referred to (its em_backend_<name> does not exist). */
#define EM_IF(cond) EM_IF_(cond)
#define EM_IF_(cond) EM_IF_##cond
#define EM_IF_1(then_, else_) then_
#define EM_IF_0(then_, else_) else_

#define EM_ROW(name, enable, auto_pick) \
    {#name, EM_IF(EM_BUILT(enable))(&em_backend_##name, NULL), auto_pick},
const em_backend_row em_backend_table[] = {EM_BACKEND_TABLE(EM_ROW)};
#undef EM_ROW
const int em_n_backend_table = (int)(sizeof em_backend_table / sizeof em_backend_table[0]);

/* The auto order, as a constant: the rows built in whose auto_pick is 1. (EM_COMMA: a bare
 * comma would split the macro argument.) */
#define EM_COMMA ,
#define EM_AUTO(name, enable, auto_pick) \
    EM_IF(EM_BUILT(enable))(EM_IF(auto_pick)(&em_backend_##name EM_COMMA, ), )
const em_backend *const em_gpu_backends[] = {EM_BACKEND_TABLE(EM_AUTO) NULL};
#undef EM_AUTO
const int em_n_gpu_backends = (int)(sizeof em_gpu_backends / sizeof em_gpu_backends[0]) - 1;

const em_backend *em_backend_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < em_n_backend_table; i++) {
        const em_backend_row *r = &em_backend_table[i];
        if (r->ops && !strcmp(r->name, name)) return r->ops;
    }
    return NULL;
}

/* The names, as a string constant built by the preprocessor (no state to fill at run time, so
 * any thread may ask first). */
#define EM_NAME(name, enable, auto_pick) EM_IF(EM_BUILT(enable))(", " #name, )
const char *em_backend_names(void) {
    return "cpu" EM_BACKEND_TABLE(EM_NAME);
}
#undef EM_NAME

void em_backend_not_in_build(const char *name, char *msg, size_t msglen) {
    if (!msg || msglen == 0) return;
    snprintf(msg, msglen, "backend '%s' is not in this build (it has: auto, %s)", name ? name : "(null)",
             em_backend_names());
}
