/* Text in and out of ember's command-line tools, the same on every system: UTF-8 arguments
 * (on Windows from the UTF-16 command line: main's ANSI argv loses every character outside
 * the code page, and the activeCodePage manifest that would fix it needs Windows 10 1903),
 * UTF-8 file names (_wfopen on Windows), and UTF-8 output (WriteConsoleW to a Windows
 * console, the bytes as they are to a file or pipe). Included by ember-cli.c and
 * ember-bench.c; every function is static inline so a tool that uses few of them compiles
 * cleanly under -Werror. */
#ifndef EMBER_TOOL_IO_H
#define EMBER_TOOL_IO_H

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

#if defined(_WIN32)
#include <windows.h>
#include <wchar.h>
#endif

/* ---- output and file names ------------------------------------------------------------ */

#if defined(_WIN32)
/* The console behind f (stdout or stderr), or NULL when f goes to a file or pipe. */
static inline HANDLE console_of(FILE *f) {
    DWORD mode;
    HANDLE h = f == stdout ? GetStdHandle(STD_OUTPUT_HANDLE) : f == stderr ? GetStdHandle(STD_ERROR_HANDLE) : NULL;
    if (!h || h == INVALID_HANDLE_VALUE || !GetConsoleMode(h, &mode)) return NULL;
    return h;
}

/* UTF-8 (n bytes) to a new NUL-terminated UTF-16 string; invalid bytes become U+FFFD. */
static inline wchar_t *utf8_to_wide(const char *s, size_t n, int *wlen) {
    if (n > (size_t)INT_MAX / 2) return NULL;
    int m = n ? MultiByteToWideChar(CP_UTF8, 0, s, (int)n, NULL, 0) : 0;
    if (n && m <= 0) return NULL;
    wchar_t *w = (wchar_t *)malloc(((size_t)m + 1) * sizeof(wchar_t));
    if (!w) return NULL;
    if (m) MultiByteToWideChar(CP_UTF8, 0, s, (int)n, w, m);
    w[m] = 0;
    if (wlen) *wlen = m;
    return w;
}
#endif

/* Writes n bytes of UTF-8 text to f: a console gets UTF-16 (WriteConsoleW), anything else
 * the bytes as they are. */
static inline void out_bytes(FILE *f, const char *s, size_t n) {
#if defined(_WIN32)
    HANDLE h = console_of(f);
    if (h) {
        int wn = 0;
        wchar_t *w = utf8_to_wide(s, n, &wn);
        if (w) {
            DWORD done;
            fflush(f);
            WriteConsoleW(h, w, (DWORD)wn, &done, NULL);
            free(w);
            return;
        }
    }
#endif
    fwrite(s, 1, n, f);
}

static inline void out_printf(FILE *f, const char *fmt, ...) {
    char small[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) { out_bytes(f, small, (size_t)n); return; }
    char *big = (char *)malloc((size_t)n + 1);
    if (!big) { out_bytes(f, small, sizeof small - 1); return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    out_bytes(f, big, (size_t)n);
    free(big);
}

/* fopen with a UTF-8 file name on every system. */
static inline FILE *open_utf8(const char *path, const char *mode) {
#if defined(_WIN32)
    wchar_t *wpath = utf8_to_wide(path, strlen(path), NULL);
    wchar_t wmode[8];
    size_t i = 0;
    for (; mode[i] && i < 7; i++) wmode[i] = (wchar_t)(unsigned char)mode[i];
    wmode[i] = 0;
    if (!wpath) { errno = ENOMEM; return NULL; }
    FILE *f = _wfopen(wpath, wmode);
    free(wpath);
    return f;
#else
    return fopen(path, mode);
#endif
}

#if defined(_WIN32)
/* argv from the UTF-16 command line, converted to UTF-8; the splitting rules of the
 * Microsoft C runtime (the ones main's argv was built with): the program name ends at the
 * first space or tab outside quotes, with no escapes; in the other arguments, 2n backslashes
 * before a quote give n backslashes and the quote opens or closes a quoted part, 2n+1
 * give n backslashes and a literal quote, "" inside a quoted part a literal quote, and other
 * backslashes are literal. Returns argc, or -1 (message printed) on failure. */
static inline int utf8_argv(const char *prog, char ***out) {
    const wchar_t *cl = GetCommandLineW();
    size_t len = wcslen(cl);
    /* every argument is at most the command line long; at most len / 2 + 2 arguments */
    wchar_t *buf = (wchar_t *)malloc((len + 1) * sizeof(wchar_t));
    size_t cap_args = len / 2 + 2;
    wchar_t **wargs = (wchar_t **)malloc(cap_args * sizeof(wchar_t *));
    if (!buf || !wargs) {
        fprintf(stderr, "%s: out of memory reading the command line\n", prog);
        free(buf);
        free(wargs);
        return -1;
    }
    const wchar_t *p = cl;
    wchar_t *o = buf;
    int argc = 0;
    /* program name */
    wargs[argc++] = o;
    int quoted = 0;
    while (*p && (quoted || (*p != L' ' && *p != L'\t'))) {
        if (*p == L'"') quoted = !quoted;
        else *o++ = *p;
        p++;
    }
    *o++ = 0;
    for (;;) {
        while (*p == L' ' || *p == L'\t') p++;
        if (!*p) break;
        wargs[argc++] = o;
        quoted = 0;
        while (*p && (quoted || (*p != L' ' && *p != L'\t'))) {
            if (*p == L'\\') {
                size_t nb = 0;
                while (*p == L'\\') { nb++; p++; }
                if (*p == L'"') {
                    for (size_t k = 0; k < nb / 2; k++) *o++ = L'\\';
                    if (nb % 2) { *o++ = L'"'; p++; }
                } else {
                    for (size_t k = 0; k < nb; k++) *o++ = L'\\';
                }
            } else if (*p == L'"') {
                if (quoted && p[1] == L'"') { *o++ = L'"'; p += 2; }
                else { quoted = !quoted; p++; }
            } else {
                *o++ = *p++;
            }
        }
        *o++ = 0;
    }
    /* buf holds every argument: each NUL stands for a separator consumed (or the end), and no
     * rule produces more characters than it reads, so len + 1 is enough */
    char **argv = (char **)calloc((size_t)argc + 1, sizeof(char *));
    int ok = argv != NULL;
    if (!ok) fprintf(stderr, "%s: out of memory reading the command line\n", prog);
    for (int i = 0; ok && i < argc; i++) {
        /* WC_ERR_INVALID_CHARS: an unpaired surrogate is an error, not a silent U+FFFD */
        int n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, wargs[i], -1, NULL, 0, NULL, NULL);
        if (n <= 0) {
            out_printf(stderr, "%s: argument %d is not valid Unicode (an unpaired UTF-16 surrogate)\n", prog, i);
            ok = 0;
            break;
        }
        argv[i] = (char *)malloc((size_t)n);
        if (!argv[i]) {
            fprintf(stderr, "%s: out of memory reading the command line\n", prog);
            ok = 0;
            break;
        }
        WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, wargs[i], -1, argv[i], n, NULL, NULL);
    }
    free(buf);
    free(wargs);
    if (!ok) {
        if (argv) for (int i = 0; i < argc; i++) free(argv[i]);
        free(argv);
        return -1;
    }
    *out = argv;
    return argc;
}
#endif

/* 1 if name is "auto" or one of the library's ember_backends() ("cpu, cuda") */
static inline int backend_built_in(const char *name) {
    if (!strcmp(name, "auto")) return 1;
    const char *list = ember_backends();
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        if (!end) break;
        p = end + 1;
        while (*p == ' ') p++;
    }
    return 0;
}

#endif
