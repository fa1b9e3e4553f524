namespace Quantization;

/// <summary>The widest SIMD vectors the kernels use on this machine.</summary>
public enum SimdTier
{
    /// <summary>No hardware vectors: every kernel runs its scalar path.</summary>
    Scalar,

    /// <summary>128-bit vectors (SSE / AdvSimd).</summary>
    Vector128,

    /// <summary>256-bit vectors (AVX2).</summary>
    Vector256,

    /// <summary>512-bit vectors (AVX-512).</summary>
    Vector512,
}
