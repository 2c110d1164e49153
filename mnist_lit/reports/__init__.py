"""The files and pictures a trained network leaves behind (metrics.csv, history.png, the confusion
matrix, mistakes, results.json): torch and matplotlib, no Lightning."""
