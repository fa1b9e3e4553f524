using System.Runtime.Intrinsics.X86;

namespace Quantization.Onnx.Tests;

/// <summary>
/// What ONNX Runtime's int8 kernels do on this CPU: on x86 without AVX-VNNI or AVX-512 VNNI its u8 × s8 kernels multiply
/// with <c>vpmaddubsw</c>, whose int16 pair sums saturate, so static and dynamic W8A8 models tested here get the weights
/// a user would give such a CPU: asymmetric uint8 (its u8 × u8 kernels widen to 16 bits first).
/// </summary>
internal static class OrtInt8Kernels
{
    /// <summary>Gets a value indicating whether ONNX Runtime's u8 × s8 kernels may saturate on this CPU.</summary>
    public static bool MaySaturate => X86Base.IsSupported && !AvxVnni.IsSupported && !HasAvx512Vnni;

    /// <summary>Gets the 8-bit weight scheme for static and dynamic models run on this CPU.</summary>
    public static QuantizationScheme WeightScheme => MaySaturate
        ? new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerChannel(0))
        : QuantizationScheme.Int8PerChannel();

    /// <summary>Gets <c>ptq</c>'s flags for that scheme.</summary>
    public static string[] WeightTypeFlags => MaySaturate ? ["--weight-type", "uint8"] : [];

    /// <summary>CPUID leaf 7, ECX bit 11: AVX512_VNNI (.NET 10 has no intrinsic class for it).</summary>
    private static bool HasAvx512Vnni => Avx512F.IsSupported && (X86Base.CpuId(7, 0).Ecx & (1 << 11)) != 0;
}
