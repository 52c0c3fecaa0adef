// Package shared declares the JSON shapes that KAITO v0.12.0's v1alpha1 and v1beta1
// Workspaces have in common (data sources and destinations, inference adapters), and
// the deep copy both versions' Workspace types use. See package v1beta1 for what the
// webhook double takes from KAITO and what it leaves out.
package shared

import (
	"encoding/json"
	"fmt"

	v1 "k8s.io/api/core/v1"
)

// DataSource is the shape of tuning.input and of an adapter's source.
type DataSource struct {
	Name             string           `json:"name,omitempty"`
	URLs             []string         `json:"urls,omitempty"`
	Volume           *v1.VolumeSource `json:"volumeSource,omitempty"`
	Image            string           `json:"image,omitempty"`
	ImagePullSecrets []string         `json:"imagePullSecrets,omitempty"`
}

// DataDestination is the shape of tuning.output.
type DataDestination struct {
	Volume          *v1.VolumeSource `json:"volumeSource,omitempty"`
	Image           string           `json:"image,omitempty"`
	ImagePushSecret string           `json:"imagePushSecret,omitempty"`
}

// AdapterSpec is the shape of one entry of inference.adapters.
type AdapterSpec struct {
	Source   *DataSource `json:"source,omitempty"`
	Strength *string     `json:"strength,omitempty"`
}

// DeepCopyInto copies src into dst through JSON. knative deep-copies only the empty
// prototypes of its handler map (to get a fresh object to decode into), and every
// field of these types survives a JSON round trip, so this is a deep copy without
// generated code.
func DeepCopyInto(src, dst any) {
	data, err := json.Marshal(src)
	if err != nil {
		panic(fmt.Sprintf("deep copy of %T: %v", src, err))
	}
	if err := json.Unmarshal(data, dst); err != nil {
		panic(fmt.Sprintf("deep copy of %T: %v", src, err))
	}
}
