/* The broken-file corpus (tests/data/broken/, written by make_corpus.py) through
 * tl_weights_open: every file must fail with the status and a message naming the
 * file and containing the phrase MANIFEST.tsv gives; afterwards a good file still
 * opens. Built with AddressSanitizer + UBSan + LeakSanitizer by `make ctest`, so an
 * out-of-bounds read or a leak on an error path fails the run too.
 *
 * Usage: test_broken_files DATA_DIR FIXTURES_DIR
 *   DATA_DIR/broken/MANIFEST.tsv: "file<TAB>phrase<TAB>status name" lines, '#' comments. */
#include "torchless.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* One manifest row: the broken file must fail with `status` and a message holding `phrase`. */
static void check_broken_file(const char *dir, const char *file, const char *phrase, const char *status) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path) {
        CHECK(0, "path too long: %s/%s", dir, file);
        return;
    }
    tl_weights *w = (tl_weights *)1; /* must come back NULL */
    tl_status s = tl_weights_open(path, &w);
    const char *msg = tl_last_error();
    CHECK(s != TL_OK, "%s: opened, expected %s with '%s'", file, status, phrase);
    CHECK(w == NULL, "%s: *out not NULL after a failure", file);
    if (s == TL_OK) {
        tl_weights_free(w);
        return;
    }
    CHECK(strcmp(tl_status_name(s), status) == 0, "%s: status '%s', expected '%s' (%s)", file, tl_status_name(s),
          status, msg);
    CHECK(strstr(msg, phrase) != NULL, "%s: message '%s' lacks '%s'", file, msg, phrase);
    CHECK(strstr(msg, path) != NULL, "%s: message '%s' does not name the file", file, msg);
}

/* Splits a line at tabs into at most n fields (in place); returns the number found. */
static int split_tabs(char *line, char **fields, int n) {
    int k = 0;
    line[strcspn(line, "\r\n")] = '\0';
    while (k < n) {
        fields[k++] = line;
        char *tab = strchr(line, '\t');
        if (!tab) break;
        *tab = '\0';
        line = tab + 1;
    }
    return k;
}

static int check_manifest(const char *dir) {
    char manifest[4096];
    if (snprintf(manifest, sizeof manifest, "%s/MANIFEST.tsv", dir) >= (int)sizeof manifest) {
        CHECK(0, "path too long: %s", dir);
        return 0;
    }
    FILE *f = fopen(manifest, "r");
    CHECK(f != NULL, "cannot open %s", manifest);
    if (!f) return 0;
    char line[4096];
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char *fields[3];
        int n = split_tabs(line, fields, 3);
        CHECK(n == 3, "%s: malformed row '%s'", manifest, line);
        if (n != 3) continue;
        check_broken_file(dir, fields[0], fields[1], fields[2]);
        rows++;
    }
    fclose(f);
    return rows;
}

/* After all the failures, the reader still works. */
static void check_good_file(const char *fixtures) {
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.derived-f32.gguf", fixtures);
    tl_weights *w = NULL;
    tl_status s = tl_weights_open(path, &w);
    CHECK(s == TL_OK, "good file %s failed: %s", path, tl_last_error());
    if (s != TL_OK) return;
    CHECK(tl_weights_n_tensors(w) > 0, "good file has no tensors");
    CHECK(tl_weights_find_kv(w, "general.architecture") != NULL, "good file has no general.architecture");
    tl_weights_free(w);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATA_DIR FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/broken", argv[1]);
    int rows = check_manifest(dir);
    CHECK(rows >= 25, "only %d rows in the manifest", rows);
    check_good_file(argv[2]);
    printf("%d broken files\n", rows);
    return check_summary();
}
