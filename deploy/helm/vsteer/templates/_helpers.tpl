{{- define "vsteer.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vsteer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vsteer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vsteer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vsteer.labels" -}}
{{ include "vsteer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "vsteer.secretName" -}}
{{- .Values.auth.existingSecret | default (include "vsteer.fullname" .) -}}
{{- end -}}

{{- define "vsteer.claimName" -}}
{{- .Values.artifacts.existingClaim | default (printf "%s-artifacts" (include "vsteer.fullname" .)) -}}
{{- end -}}

{{- define "vsteer.gpus" -}}
{{- mul (int .Values.parallel.tensor) (int .Values.parallel.pipeline) -}}
{{- end -}}
