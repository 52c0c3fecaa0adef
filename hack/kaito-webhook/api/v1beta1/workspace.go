// Package v1beta1 declares the JSON shape of KAITO v0.12.0's kaito.sh/v1beta1
// Workspace, which is all the webhook double needs of KAITO.
//
// The double reproduces KAITO's Workspace webhook only up to its strict decode of the
// new and the old object. That decode is knative's code (unknown fields disallowed
// outside metadata, as KAITO configures it), and it alone decides whether a write
// carrying a field KAITO's Go type lacks, such as our status.status, is stored.
// KAITO's own validation rules (immutable fields, preset, instance type, data source
// and annotation checks, …) are not reproduced: Validate accepts every object that
// decodes, and tests must not rely on any other denial.
//
// Because the decode is strict, the types here must have exactly the JSON fields of
// KAITO's at every depth, no more and no fewer: ../crd_test.go checks them against
// KAITO's CRD, which controller-gen generates from KAITO's Go types.
package v1beta1

import (
	"context"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"knative.dev/pkg/apis"

	"kaitowebhook/api/shared"
)

// GroupVersion is the API version of this package's Workspace.
var GroupVersion = schema.GroupVersion{Group: "kaito.sh", Version: "v1beta1"}

// ResourceSpec is the shape of a Workspace's resource.
type ResourceSpec struct {
	Count          *int                  `json:"count,omitempty"`
	InstanceType   string                `json:"instanceType,omitempty"`
	LabelSelector  *metav1.LabelSelector `json:"labelSelector"`
	PreferredNodes []string              `json:"preferredNodes,omitempty"`
	Partition      *PartitionSpec        `json:"partition,omitempty"`
}

// PartitionSpec is the shape of resource.partition (v1beta1 only).
type PartitionSpec struct {
	Mode    string `json:"mode"`
	Profile string `json:"profile,omitempty"`
	Count   *int   `json:"count,omitempty"`
}

// PresetMeta holds the preset fields that sit directly in inference.preset and
// tuning.preset.
type PresetMeta struct {
	Name       string `json:"name"`
	AccessMode string `json:"accessMode,omitempty"`
}

// PresetOptions is the shape of a preset's presetOptions.
type PresetOptions struct {
	Image             string   `json:"image,omitempty"`
	ImagePullSecrets  []string `json:"imagePullSecrets,omitempty"`
	ModelAccessSecret string   `json:"modelAccessSecret,omitempty"`
}

// PresetSpec is the shape of inference.preset and tuning.preset.
type PresetSpec struct {
	PresetMeta    `json:",inline"`
	PresetOptions `json:"presetOptions,omitempty"`
}

// InferenceSpec is the shape of a Workspace's inference.
type InferenceSpec struct {
	Preset   *PresetSpec          `json:"preset,omitempty"`
	Template *v1.PodTemplateSpec  `json:"template,omitempty"`
	Config   string               `json:"config,omitempty"`
	Adapters []shared.AdapterSpec `json:"adapters,omitempty"`
}

// TuningSpec is the shape of a Workspace's tuning.
type TuningSpec struct {
	Preset *PresetSpec             `json:"preset,omitempty"`
	Method string                  `json:"method,omitempty"`
	Config string                  `json:"config,omitempty"`
	Input  *shared.DataSource      `json:"input"`
	Output *shared.DataDestination `json:"output"`
}

// Metric is the shape of one value of status.performance.metrics.
type Metric struct {
	Description string            `json:"description"`
	Value       string            `json:"value"`
	Unit        string            `json:"unit,omitempty"`
	Config      map[string]string `json:"config,omitempty"`
}

// Performance is the shape of status.performance.
type Performance struct {
	Metrics map[string]Metric `json:"metrics,omitempty"`
}

// WorkspaceStatus is the shape of status as KAITO's type has it. It has no `status`
// field, so a Workspace carrying status.status does not decode into it.
type WorkspaceStatus struct {
	WorkerNodes     []string           `json:"workerNodes,omitempty"`
	State           string             `json:"state,omitempty"`
	Conditions      []metav1.Condition `json:"conditions,omitempty"`
	TargetNodeCount int32              `json:"targetNodeCount,omitempty"`
	Performance     *Performance       `json:"performance,omitempty"`
}

// Workspace is the whole object. It has no spec: resource, inference and tuning are
// top-level fields.
type Workspace struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Resource          ResourceSpec    `json:"resource,omitempty"`
	Inference         *InferenceSpec  `json:"inference,omitempty"`
	Tuning            *TuningSpec     `json:"tuning,omitempty"`
	Status            WorkspaceStatus `json:"status,omitempty"`
}

// DeepCopyObject implements runtime.Object.
func (w *Workspace) DeepCopyObject() runtime.Object {
	out := &Workspace{}
	shared.DeepCopyInto(w, out)
	return out
}

// SetDefaults implements apis.Defaultable, which knative requires of a handler type;
// its validating admission controller never calls it.
func (w *Workspace) SetDefaults(context.Context) {}

// Validate implements apis.Validatable: everything is accepted. knative calls it only
// once the new and the old object have both decoded (see the package comment).
func (w *Workspace) Validate(context.Context) *apis.FieldError { return nil }
