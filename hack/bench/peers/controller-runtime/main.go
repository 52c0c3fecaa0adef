// Command workspace-peer is the controller-runtime peer of the workspace-operator
// benchmark: it keeps status.status of every kaito.sh/v1beta1 Workspace in line with
// its conditions, with the same rules as controllers/workspace/fsm.py, on unstructured
// objects from controller-runtime's cache.
//
// It remembers the state as ours does (controllers/workspace/record.py): KAITO's status
// PUT drops status.status, so the state is also kept in a condition of type
// workspace-status.kaito.sh/State (reason = the state), which KAITO's typed round trip
// keeps. The previous state is status.status when legal, else that record. Each write
// is one JSON patch of the status subresource that sets the field and the record; its
// first op replaces metadata.resourceVersion with the read one, so a stale cache gets
// 409 Conflict. A write happens on a transition, and to restore the field (or the
// record) when it no longer holds the state.
//
// Only the parts of the state machine that decide the state are ported: which
// conditions gate an inference workspace, tuning's terminal states and failure
// reasons, first-condition-of-a-type-wins, deletion (which keeps its state, restored
// when dropped), and invalid workloads. Stale conditions are not (they need
// status.state, which the benchmark's workspaces do not have); nor are Events, the
// stuck-Pending warning and metrics.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

var workspaceGVK = schema.GroupVersionKind{Group: "kaito.sh", Version: "v1beta1", Kind: "Workspace"}

// recordCondition is the type of the condition that records the last state written.
const recordCondition = "workspace-status.kaito.sh/State"

const recordMessage = "status.status is %s since this time; recorded here because status " +
	"writes that do not know status.status (KAITO's) drop it"

const (
	pending   = "Pending"
	ready     = "Ready"
	notReady  = "NotReady"
	running   = "Running"
	succeeded = "Succeeded"
	failed    = "Failed"
)

// Condition types that never keep an inference workspace from Ready; any other
// type (one never heard of included) gates.
var inferenceInformational = map[string]bool{
	recordCondition:        true,
	"WorkspaceDeleting":    true,
	"WorkspaceSucceeded":   true,
	"ScalingDownCompleted": true,
	"JobStarted":           true,
}

// A tuning workspace has failed when one of these types is False with its reason.
var tuningFailureReasons = map[string]string{
	"WorkspaceSucceeded": "workspaceFailed",
	"JobStarted":         "WorkspaceTuningJobStatusFailed",
}

var legalStates = map[string]map[string]bool{
	"inference": {pending: true, ready: true, notReady: true},
	"tuning":    {pending: true, running: true, succeeded: true, failed: true},
}

type condition struct{ status, reason string }

// nextState returns the state status.status must hold and whether it has to be
// written: on a transition, or when the field or the record no longer holds the state
// (KAITO's status PUT dropped the field). write is false for invalid and unreadable
// workspaces, and for deleting ones unless their dropped field can be restored.
func nextState(obj map[string]any) (state string, write bool) {
	status, _ := obj["status"].(map[string]any)
	conditions, ok := firstOfEachType(status["conditions"])
	if !ok {
		return "", false
	}
	field, _ := status["status"].(string)
	record := conditions[recordCondition].reason
	meta, _ := obj["metadata"].(map[string]any)
	if meta["deletionTimestamp"] != nil || conditions["WorkspaceDeleting"].status == "True" {
		// A deleting workspace keeps its state; only put back a dropped field.
		return record, status["status"] == nil && record != ""
	}
	inference, tuning := obj["inference"] != nil, obj["tuning"] != nil
	if inference == tuning {
		return "", false
	}
	workload := "tuning"
	if inference {
		workload = "inference"
	}
	previous := ""
	if legalStates[workload][field] {
		previous = field
	} else if legalStates[workload][record] {
		previous = record
	}
	if inference {
		state = nextInference(previous, conditions)
	} else {
		state = nextTuning(previous, conditions)
	}
	return state, field != state || record != state
}

func nextInference(previous string, conditions map[string]condition) string {
	blocked := false
	for t, c := range conditions {
		if c.status == "False" && !inferenceInformational[t] {
			blocked = true
			break
		}
	}
	if !blocked && conditions["ResourceReady"].status == "True" &&
		conditions["InferenceReady"].status == "True" {
		return ready
	}
	if previous == ready || previous == notReady {
		return notReady
	}
	return pending
}

func nextTuning(previous string, conditions map[string]condition) string {
	if previous == succeeded || previous == failed {
		return previous
	}
	for t, reason := range tuningFailureReasons {
		if c, ok := conditions[t]; ok && c.status == "False" && c.reason == reason {
			return failed
		}
	}
	if conditions["WorkspaceSucceeded"].status == "True" {
		return succeeded
	}
	if conditions["JobStarted"].status == "True" || previous == running {
		return running
	}
	return pending
}

// firstOfEachType reads status.conditions as meta.FindStatusCondition does: the
// first entry of a type wins. ok is false when the list cannot be read as conditions
// (the Python controller refuses such an object too).
func firstOfEachType(raw any) (map[string]condition, bool) {
	out := map[string]condition{}
	if raw == nil {
		return out, true
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, false
	}
	for _, item := range list {
		c, ok := item.(map[string]any)
		if !ok {
			return nil, false
		}
		t, ok := c["type"].(string)
		if !ok || t == "" {
			return nil, false
		}
		if _, seen := out[t]; seen {
			continue
		}
		status, _ := c["status"].(string)
		reason, _ := c["reason"].(string)
		out[t] = condition{status: status, reason: reason}
	}
	return out, true
}

// statePatch is the JSON patch (RFC 6902) that sets status.status and the record to
// state on obj, as controllers/workspace/record.py builds it: the precondition first,
// then the field, then the record in place (or appended). The record keeps its
// lastTransitionTime when it already holds state (a restore).
func statePatch(obj *unstructured.Unstructured, state string, now time.Time) []map[string]any {
	ops := []map[string]any{
		{"op": "replace", "path": "/metadata/resourceVersion", "value": obj.GetResourceVersion()},
	}
	since := now.UTC().Format(time.RFC3339)
	status, hasStatus := obj.Object["status"].(map[string]any)
	conditions, hasConditions := status["conditions"].([]any)
	index := -1
	for i, item := range conditions {
		if c, _ := item.(map[string]any); c["type"] == recordCondition {
			index = i
			if c["reason"] == state {
				if old, ok := c["lastTransitionTime"].(string); ok && old != "" {
					since = old
				}
			}
			break
		}
	}
	record := map[string]any{
		"type":               recordCondition,
		"status":             "True",
		"reason":             state,
		"message":            fmt.Sprintf(recordMessage, state),
		"lastTransitionTime": since,
	}
	if generation := obj.GetGeneration(); generation != 0 {
		record["observedGeneration"] = generation
	}
	// RFC 6902 adds only into a parent that exists.
	if !hasStatus {
		ops = append(ops, map[string]any{"op": "add", "path": "/status", "value": map[string]any{"status": state}})
	} else {
		ops = append(ops, map[string]any{"op": "add", "path": "/status/status", "value": state})
	}
	switch {
	case index >= 0:
		ops = append(ops, map[string]any{"op": "replace", "path": fmt.Sprintf("/status/conditions/%d", index), "value": record})
	case !hasConditions:
		ops = append(ops, map[string]any{"op": "add", "path": "/status/conditions", "value": []any{record}})
	default:
		ops = append(ops, map[string]any{"op": "add", "path": "/status/conditions/-", "value": record})
	}
	return ops
}

type workspaceReconciler struct {
	client client.Client
}

func (r *workspaceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(workspaceGVK)
	if err := r.client.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	state, write := nextState(obj.Object)
	if !write {
		return ctrl.Result{}, nil
	}
	patch, err := json.Marshal(statePatch(obj, state, time.Now()))
	if err != nil {
		return ctrl.Result{}, err
	}
	err = r.client.Status().Patch(ctx, obj, client.RawPatch(types.JSONPatchType, patch))
	switch {
	case apierrors.IsConflict(err):
		// A stale cache: retry once the informer has the newer object.
		return ctrl.Result{Requeue: true}, nil //nolint:staticcheck // same rate-limited requeue as ours
	case apierrors.IsNotFound(err):
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, err
}

func main() {
	// --kubeconfig is controller-runtime's own flag, read by GetConfig.
	workers := flag.Int("workers", 1, "MaxConcurrentReconciles")
	flag.Parse()
	ctrl.SetLogger(zap.New())

	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg.QPS = -1 // no client-side rate limit, as in ours
	cfg.UserAgent = "workspace-peer-controller-runtime"

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Unstructured reads go to the API server unless asked to use the cache.
		Client: client.Options{Cache: &client.CacheOptions{Unstructured: true}},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	watched := &unstructured.Unstructured{}
	watched.SetGroupVersionKind(workspaceGVK)
	err = ctrl.NewControllerManagedBy(mgr).
		For(watched).
		WithEventFilter(predicate.ResourceVersionChangedPredicate{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: *workers}).
		Named("workspace-status").
		Complete(&workspaceReconciler{client: mgr.GetClient()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
