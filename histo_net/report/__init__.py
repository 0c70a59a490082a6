"""The pathologist's report: the report model, report.json, self-contained HTML, heatmaps, QuPath GeoJSON."""
