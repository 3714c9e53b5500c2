"""ENAS with Weight Plasticity Loss (Benyahia, Yu et al., ICML 2019); the method is :mod:`wpl_enas.wpl`."""
