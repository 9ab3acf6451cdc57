package miniotest_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/goleak"

	"github.com/crdgo/crdgo/storage/miniotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func live(addr string) bool {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/minio/health/live")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestServer builds MinIO if it must (make minio runs this), starts it, kills it
// and brings it back on the same port and folder with its data.
func TestServer(t *testing.T) {
	srv := miniotest.New(t)
	if !live(srv.Endpoint()) {
		t.Fatalf("%s not live after New", srv.Endpoint())
	}
	mc, err := minio.New(srv.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.MakeBucket(t.Context(), "kept", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if live(srv.Endpoint()) {
		t.Fatalf("%s still live after Kill", srv.Endpoint())
	}
	if err := srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ok, err := mc.BucketExists(t.Context(), "kept"); err != nil || !ok {
		t.Errorf("BucketExists(kept) after a restart = %v, %v; want true", ok, err)
	}
	bad, _ := minio.New(srv.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, "not-the-secret", "")})
	if _, err := bad.BucketExists(t.Context(), "kept"); err == nil {
		t.Errorf("a wrong secret was accepted: the server's credentials are not the random ones")
	}
}
