using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// The implementations of the integer-activation kernels of <see cref="QuantizedLinear"/> (W8A8, and W4A8 with its subset
/// of paths); every one gives the same int32 sums, so the path changes speed, never results. See
/// <see cref="QuantizedLinear.KernelPath"/>.
/// </summary>
public enum Int8KernelPath
{
    /// <summary>One multiply-add per weight.</summary>
    Scalar,

    /// <summary>Portable 128-bit vectors: bytes widened to int32 lanes, one lane per (channel, feature mod 4).</summary>
    Vector128,

    /// <summary>
    /// AVX2 <c>vpmaddwd</c> on weights and activations widened to int16: pairs of products summed exactly into int32
    /// (4-bit weights: <c>vpmaddubsw</c> on the codes, exact as their products are small, then <c>vpmaddwd</c> by ones).
    /// </summary>
    Vector256,

    /// <summary>AVX-512BW <c>vpmaddwd</c> on widened int16, 32 products per instruction.</summary>
    Vector512,

    /// <summary>
    /// AVX-VNNI <c>vpdpbusd</c> (256-bit, the VEX form .NET exposes): unsigned activation bytes (the int8 value + 128)
    /// times signed weight bytes, four products summed into each int32 lane with no intermediate saturation (unlike
    /// <c>vpmaddubsw</c>, whose int16 pair sums saturate); the 128 x row-sum offset is subtracted afterwards.
    /// </summary>
    AvxVnni,

    /// <summary>
    /// AVX-512 VNNI <c>vpdpbusd</c> (512-bit), assembled at run time into executable memory (.NET 10 has no intrinsic
    /// for it; see <see cref="QuantizedLinear.DisableAssembledKernelsSwitch"/>): the same arithmetic as
    /// <see cref="AvxVnni"/> on twice the lanes, tiles of up to eight tokens.
    /// </summary>
    Avx512Vnni,
}

/// <summary>Chooses and describes the W8A8 kernel paths.</summary>
internal static class Int8KernelPaths
{
    /// <summary>
    /// Gets the fastest path this machine runs: AVX-512 VNNI when its kernels could be built (64 products per
    /// instruction), else AVX-VNNI (it fuses multiply, pair-sum and accumulate, 32 products per instruction), else the
    /// widest vector tier.
    /// </summary>
    public static Int8KernelPath Best =>
        IsSupported(Int8KernelPath.Avx512Vnni) ? Int8KernelPath.Avx512Vnni
        : IsSupported(Int8KernelPath.AvxVnni) ? Int8KernelPath.AvxVnni
        : QuantizationPrimitives.ActiveSimdTier switch
        {
            SimdTier.Vector512 => Int8KernelPath.Vector512,
            SimdTier.Vector256 => Int8KernelPath.Vector256,
            SimdTier.Vector128 => Int8KernelPath.Vector128,
            _ => Int8KernelPath.Scalar,
        };

    /// <summary>Gets whether this machine, with this process's settings, runs a path.</summary>
    /// <param name="path">The path.</param>
    /// <returns><see langword="true"/> when the path can run.</returns>
    public static bool IsSupported(Int8KernelPath path) => path switch
    {
        Int8KernelPath.Scalar => true,
        Int8KernelPath.Vector128 => Vector128.IsHardwareAccelerated,
        Int8KernelPath.Vector256 => Vector256.IsHardwareAccelerated && Avx2.IsSupported,
        Int8KernelPath.Vector512 => Vector512.IsHardwareAccelerated && Avx512BW.IsSupported,
        Int8KernelPath.AvxVnni => Vector256.IsHardwareAccelerated && AvxVnni.IsSupported,
        Int8KernelPath.Avx512Vnni => Avx512VnniKernel.IsSupported,
        _ => false,
    };
}
