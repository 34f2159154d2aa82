package push

import (
	"crypto/sha256"
	"encoding/base64"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
)

// pageHandler serves the page's files (the ticker page and /livepush.js) with a strong ETag per file and
// Cache-Control: no-cache. Embedded files carry no modification time, so without an ETag a browser could neither
// revalidate nor cache them; with it, every load asks and gets a 304 until a deploy changes the file, and never runs
// a stale client library against a newer edge.
func pageHandler(fsys fs.FS, log *slog.Logger) http.Handler {
	etags := make(map[string]string)
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags[name] = `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
		return nil
	})
	if err != nil {
		log.Warn("page files: no ETags", "err", err) // still served, only not revalidated
	}
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		if tag, ok := etags[name]; ok {
			w.Header().Set("ETag", tag) // http.ServeContent answers If-None-Match with 304 from it
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
