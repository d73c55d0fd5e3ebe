//! SASRec, TiSASRec and their mHC variants on tch (libtorch).
