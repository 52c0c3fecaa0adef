// Package v1alpha1 declares the JSON shape of KAITO v0.12.0's kaito.sh/v1alpha1
// Workspace. As for v1beta1 (see its package comment), the double reproduces only
// knative's strict decode into this shape: Validate accepts every object that
// decodes, and ../crd_test.go checks the JSON fields against KAITO's CRD.
package v1alpha1

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
var GroupVersion = schema.GroupVersion{Group: "kaito.sh", Version: "v1alpha1"}

// ResourceSpec is the shape of a Workspace's resource.
type ResourceSpec struct {
	Count          *int                  `json:"count,omitempty"`
	InstanceType   string                `json:"instanceType,omitempty"`
	LabelSelector  *metav1.LabelSelector `json:"labelSelector"`
	PreferredNodes []string              `json:"preferredNodes,omitempty"`
}

// PresetMeta holds the preset fields that sit directly in inference.preset and
// tuning.preset.
type PresetMeta struct {
	Name       string `json:"name"`
	AccessMode string `json:"accessMode,omitempty"`
}

// PresetOptions is the shape of a preset's presetOptions.
type PresetOptions struct {
	Image            string   `json:"image,omitempty"`
	ImagePullSecrets []string `json:"imagePullSecrets,omitempty"`
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

// WorkspaceStatus is the shape of status as KAITO's type has it: no `status` field.
type WorkspaceStatus struct {
	WorkerNodes []string           `json:"workerNodes,omitempty"`
	Conditions  []metav1.Condition `json:"conditions,omitempty"`
}

// Workspace is the whole object, with resource, inference and tuning at the top level.
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

// Validate implements apis.Validatable: everything that decoded is accepted.
func (w *Workspace) Validate(context.Context) *apis.FieldError { return nil }
