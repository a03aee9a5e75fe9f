"""Statistical shape models of the sternum: surfaces, dense correspondence, GPA, PCA, fitting and export."""
