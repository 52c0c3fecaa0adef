// Command kaito-webhook serves KAITO's validating admission webhook for Workspaces
// outside a cluster: a test double of the webhook a KAITO installation registers as
// validation.workspace.kaito.sh.
//
// What is knative's own code, unchanged (knative.dev/pkg at the version KAITO v0.12.0
// pins, see go.mod): the admission controller, built by
// validation.NewAdmissionController with the arguments KAITO's webhook setup passes
// (pkg/workspace/webhooks/webhooks.go @ kaito v0.12.0: name, path, unknown fields
// disallowed, no context wrapping), and the HTTP handler from webhook.New. So each
// request gets knative's Content-Type check, AdmissionReview decode, strict decode of
// the new and the old object (webhook/json.Decode) and knative's response (a 400
// BadRequest Status when denied).
//
// What is ours: the Workspace types (package api), only their JSON shape, checked
// against KAITO's CRD by api/crd_test.go; their Validate accepts everything, so the
// only denials are the strict decode's. KAITO's own validation rules are not
// reproduced (see api/v1beta1). And the serving: TLS from files instead of knative's
// certificate Secret, and knative's controller that rewrites the
// ValidatingWebhookConfiguration is constructed but never run, so the caller
// registers the configuration (CREATE and UPDATE of workspaces and
// workspaces/status, the rules that controller would write for KAITO's types).
//
// On start it prints one line, "serving https://HOST:PORT/PATH", once the listener
// is bound (so --listen 127.0.0.1:0 picks a free port without a race), then serves
// until SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"
	"knative.dev/pkg/injection"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/system"
	"knative.dev/pkg/webhook"
	"knative.dev/pkg/webhook/resourcesemantics"
	"knative.dev/pkg/webhook/resourcesemantics/validation"

	"kaitowebhook/api/v1alpha1"
	"kaitowebhook/api/v1beta1"
)

// KAITO's names (pkg/workspace/webhooks/webhooks.go @ v0.12.0).
const (
	webhookName = "validation.workspace.kaito.sh"
	webhookPath = "/validate/workspace.kaito.sh"
)

// workspaceResources: the kinds and versions KAITO registers, each with our type.
var workspaceResources = map[schema.GroupVersionKind]resourcesemantics.GenericCRD{
	v1alpha1.GroupVersion.WithKind("Workspace"): &v1alpha1.Workspace{},
	v1beta1.GroupVersion.WithKind("Workspace"):  &v1beta1.Workspace{},
}

type options struct {
	listen     string
	certFile   string
	keyFile    string
	kubeconfig string
}

func main() {
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:0", "address to serve HTTPS on (port 0: any free port)")
	flag.StringVar(&o.certFile, "tls-cert", "", "PEM serving certificate (required)")
	flag.StringVar(&o.keyFile, "tls-key", "", "PEM private key of the serving certificate (required)")
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "cluster for the clients knative's controller is built with (required; never contacted)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "kaito-webhook:", err)
		os.Exit(2)
	}
}

func run(o options) error {
	if o.certFile == "" || o.keyFile == "" || o.kubeconfig == "" {
		return errors.New("--tls-cert, --tls-key and --kubeconfig are required")
	}
	cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	// knative's constructor reads system.Namespace(), which panics when this is unset;
	// KAITO's chart sets it to the release namespace.
	if os.Getenv(system.NamespaceEnvKey) == "" {
		if err := os.Setenv(system.NamespaceEnvKey, "kaito-workspace"); err != nil {
			return err
		}
	}

	zl, err := zap.NewProduction()
	if err != nil {
		return err
	}
	logger := zl.Sugar()
	defer func() { _ = logger.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logging.WithLogger(ctx, logger)
	// The clients and informers knative's constructor takes from the context, as
	// KAITO's sharedmain sets them up. The informers are never started: only the
	// configuration-rewriting controller reads them, and it does not run here.
	ctx, _ = injection.Default.SetupInformers(ctx, cfg)
	// No SecretName: knative's server would take its certificate from that Secret;
	// this process serves the files it was given.
	ctx = webhook.WithOptions(ctx, webhook.Options{})

	impl := validation.NewAdmissionController(ctx, webhookName, webhookPath, workspaceResources,
		func(ctx context.Context) context.Context { return ctx }, true)
	admission, ok := impl.Reconciler.(webhook.AdmissionController)
	if !ok {
		return fmt.Errorf("%T is not a knative AdmissionController", impl.Reconciler)
	}
	handler, err := webhook.New(ctx, []interface{}{admission})
	if err != nil {
		return fmt.Errorf("knative webhook: %w", err)
	}

	listener, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	server := &http.Server{
		Handler: handler,
		// As knative's server: TLS 1.3 at least, HTTP/2 off (a non-nil, empty
		// TLSNextProto), a bound on slow headers.
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- server.ServeTLS(listener, "", "") }()
	fmt.Printf("serving https://%s%s\n", listener.Addr(), admission.Path())

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// As knative's server: no keep-alives from here on, then wait for requests in
	// flight. A connection the API server opened but has not used yet counts as busy
	// for up to 5 s (net/http's rule for new connections), so after that it is closed.
	server.SetKeepAlivesEnabled(false)
	shutdown, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	if err := server.Shutdown(shutdown); errors.Is(err, context.DeadlineExceeded) {
		_ = server.Close()
	} else if err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
