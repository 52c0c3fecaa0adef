// The check that our Workspace types are KAITO's where it matters: knative decodes
// admission requests into them with unknown fields disallowed, so a request is
// denied exactly when it holds a JSON field the type lacks. KAITO's CRD is generated
// by controller-gen from KAITO's Go types (make manifests), so at every depth the
// CRD's properties are the Go type's JSON fields; this test walks our types and the
// CRD together and requires the same field names everywhere.
package api_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"kaitowebhook/api/v1alpha1"
	"kaitowebhook/api/v1beta1"
)

// KAITO's Workspace CRD at v0.12.0, kept unmodified in the repository's fixtures.
var crdPath = filepath.Join("..", "..", "..", "tests", "fixtures", "kaito", "kaito.sh_workspaces.yaml")

type schema = map[string]any

func versionSchemas(t *testing.T) map[string]schema {
	t.Helper()
	data, err := os.ReadFile(crdPath)
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema schema `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	out := map[string]schema{}
	for _, v := range crd.Spec.Versions {
		out[v.Name] = v.Schema.OpenAPIV3Schema
	}
	return out
}

var unmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

// Where the CRD shows no fields, the Go type must be the one KAITO's source declares
// there, from the same k8s.io/api and apimachinery (v0.35.0): the top-level metadata
// (which knative's decode skips), and the pod template and volume sources, which
// KAITO marks schemaless (the CRD preserves unknown fields there; KAITO's strict
// decode still rejects them).
var bareObjects = map[reflect.Type]bool{
	reflect.TypeOf(metav1.ObjectMeta{}):      true,
	reflect.TypeOf(corev1.PodTemplateSpec{}): true,
	reflect.TypeOf(corev1.VolumeSource{}):    true,
}

// jsonFields are the names encoding/json decodes into a struct, with their types:
// embedded structs without a JSON name are promoted, as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			inner := f.Type
			if inner.Kind() == reflect.Pointer {
				inner = inner.Elem()
			}
			if inner.Kind() == reflect.Struct {
				for k, v := range jsonFields(inner) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

type walker struct {
	t       *testing.T
	visited int
	opaque  []string
}

func (w *walker) walk(path string, typ reflect.Type, s schema) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	// Types with their own decoding (Time, Quantity, IntOrString) are scalars in JSON.
	if reflect.PointerTo(typ).Implements(unmarshaler) {
		return
	}
	switch typ.Kind() {
	case reflect.Struct:
		props, ok := s["properties"].(map[string]any)
		if !ok {
			if !bareObjects[typ] {
				w.t.Errorf("%s: %s has no properties in the CRD", path, typ)
			}
			w.opaque = append(w.opaque, path+" "+typ.String())
			return
		}
		fields := jsonFields(typ)
		var missing, extra []string
		for name := range props {
			if _, ok := fields[name]; !ok {
				missing = append(missing, name)
			}
		}
		for name := range fields {
			if _, ok := props[name]; !ok {
				extra = append(extra, name)
			}
		}
		sort.Strings(missing)
		sort.Strings(extra)
		if len(missing) > 0 {
			w.t.Errorf("%s (%s): the CRD has %v, our type does not", path, typ, missing)
		}
		if len(extra) > 0 {
			w.t.Errorf("%s (%s): our type has %v, the CRD does not", path, typ, extra)
		}
		w.visited++
		for name, ft := range fields {
			if sub, ok := props[name].(map[string]any); ok {
				w.walk(path+"."+name, ft, sub)
			}
		}
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 {
			return // []byte is a base64 string
		}
		if items, ok := s["items"].(map[string]any); ok {
			w.walk(path+"[]", typ.Elem(), items)
		} else {
			w.t.Errorf("%s: a list in our type, no items in the CRD", path)
		}
	case reflect.Map:
		if values, ok := s["additionalProperties"].(map[string]any); ok {
			w.walk(path+"{}", typ.Elem(), values)
		} else {
			w.t.Errorf("%s: a map in our type, no additionalProperties in the CRD", path)
		}
	}
}

func TestWorkspaceTypesHaveKAITOsFields(t *testing.T) {
	schemas := versionSchemas(t)
	for version, obj := range map[string]any{"v1alpha1": &v1alpha1.Workspace{}, "v1beta1": &v1beta1.Workspace{}} {
		t.Run(version, func(t *testing.T) {
			s, ok := schemas[version]
			if !ok {
				t.Fatalf("the CRD has no version %s", version)
			}
			w := &walker{t: t}
			w.walk("Workspace", reflect.TypeOf(obj), s)
			// A walk that stopped early would pass vacuously: v0.12.0's v1alpha1 has 16
			// objects with properties, v1beta1 19 (partition, performance, metrics).
			if w.visited < 16 {
				t.Errorf("compared only %d objects", w.visited)
			}
			t.Logf("%s: %d objects compared; bare: %v", version, w.visited, w.opaque)
		})
	}
}

// The fact the e2e tests rest on, at the type level: status.status is not a field.
func TestStatusStatusIsUnknown(t *testing.T) {
	for name, status := range map[string]any{"v1alpha1": v1alpha1.WorkspaceStatus{}, "v1beta1": v1beta1.WorkspaceStatus{}} {
		if _, ok := jsonFields(reflect.TypeOf(status))["status"]; ok {
			t.Errorf("%s WorkspaceStatus has a status field", name)
		}
	}
}
