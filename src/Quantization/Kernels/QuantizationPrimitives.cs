using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// SIMD kernels for quantization: reductions (<see cref="MinMax"/>, <see cref="MaxMagnitude"/>), quantize and dequantize
/// per tensor, per channel, per group and per token, and fused dynamic quantization. Every vector path
/// (Vector512, Vector256, Vector128) gives exactly the bits of the scalar path.
/// </summary>
/// <remarks>
/// Arguments are validated here, at the public boundary. Data containing NaN or an infinity is rejected with a
/// <see cref="NonFiniteValueException"/> naming the tensor (pass <c>tensorName</c>) and the first bad index; when it is
/// thrown by a quantize method the destination may have been partly written. Sources and destinations must not overlap.
/// </remarks>
public static partial class QuantizationPrimitives
{
    /// <summary>Gets the widest vector path the kernels take on this machine and with this process's settings.</summary>
    /// <remarks>
    /// Set <c>DOTNET_EnableAVX512=0</c>, <c>DOTNET_EnableAVX2=0</c> or <c>DOTNET_EnableHWIntrinsic=0</c> before the
    /// process starts to select a narrower tier; the results are the same bits on every tier.
    /// </remarks>
    public static SimdTier ActiveSimdTier =>
        Vector512.IsHardwareAccelerated ? SimdTier.Vector512
        : Vector256.IsHardwareAccelerated ? SimdTier.Vector256
        : Vector128.IsHardwareAccelerated ? SimdTier.Vector128
        : SimdTier.Scalar;

    /// <summary>
    /// Throws for the first NaN or infinity in <paramref name="values"/>; called when a kernel has flagged a run, which
    /// may be a false alarm (see <see cref="QuantizeOperator.MaybeNonFinite(Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float})"/>).
    /// </summary>
    internal static void ThrowIfNonFinite(ReadOnlySpan<float> values, string? tensorName, string paramName, long offset = 0)
    {
        int index = IndexOfNonFinite(values);
        if (index >= 0)
        {
            throw new NonFiniteValueException(tensorName, offset + index, values[index], paramName);
        }
    }

    /// <summary>Finds the first NaN or infinity (all exponent bits set), or -1; whole vectors are skipped while none holds one.</summary>
    internal static int IndexOfNonFinite(ReadOnlySpan<float> values)
    {
        const uint Exponent = 0x7F80_0000;
        ref uint bits = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(values));
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= values.Length - Vector512<uint>.Count; i += Vector512<uint>.Count)
            {
                if (Vector512.EqualsAny(Vector512.LoadUnsafe(ref bits, (nuint)i) & Vector512.Create(Exponent), Vector512.Create(Exponent)))
                {
                    break;
                }
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= values.Length - Vector256<uint>.Count; i += Vector256<uint>.Count)
            {
                if (Vector256.EqualsAny(Vector256.LoadUnsafe(ref bits, (nuint)i) & Vector256.Create(Exponent), Vector256.Create(Exponent)))
                {
                    break;
                }
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            for (; i <= values.Length - Vector128<uint>.Count; i += Vector128<uint>.Count)
            {
                if (Vector128.EqualsAny(Vector128.LoadUnsafe(ref bits, (nuint)i) & Vector128.Create(Exponent), Vector128.Create(Exponent)))
                {
                    break;
                }
            }
        }

        for (; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>Checks that a destination has exactly the source's length.</summary>
    internal static void ValidateLengths(int sourceLength, int destinationLength, string destinationName)
    {
        if (sourceLength != destinationLength)
        {
            throw new ArgumentException($"The destination has {destinationLength} elements but the source has {sourceLength}.", destinationName);
        }
    }

    /// <summary>
    /// Checks a scale: finite and positive, or zero where <paramref name="allowZero"/> (dequantization, and quantization by
    /// conventions that multiply by the reciprocal, where a zero scale maps everything to the zero point).
    /// </summary>
    internal static void ValidateScale(float scale, bool allowZero, string paramName, int index = -1)
    {
        if (!float.IsFinite(scale) || scale < 0f || (scale == 0f && !allowZero))
        {
            string where = index < 0 ? string.Empty : FormattableString.Invariant($" at index {index}");
            throw new ArgumentOutOfRangeException(paramName, scale, $"The scale{where} must be finite and {(allowZero ? "not negative" : "positive")}.");
        }
    }

    /// <summary>
    /// Gets how far a block loop advances after its first block: to the first element of <paramref name="stream"/> that
    /// is aligned to <paramref name="vectorBytes"/>, so every later block's loads (or stores) of that stream stay inside
    /// cache lines; a full block when the stream is already aligned. Kernels align the stream that moves the most bytes.
    /// </summary>
    /// <remarks>The address is read unpinned: if the GC moves the data, only the speed changes, never the result.</remarks>
    internal static nuint FirstStep<T>(ref T stream, int vectorBytes, int blockElements)
    {
        nuint toAlignment = ElementsToAlignment(ref stream, vectorBytes);
        return toAlignment == 0 ? (nuint)blockElements : toAlignment;
    }

    /// <summary>Gets how many elements of <paramref name="stream"/> come before the first <paramref name="vectorBytes"/>-aligned one.</summary>
    internal static unsafe nuint ElementsToAlignment<T>(ref T stream, int vectorBytes)
    {
        nuint misaligned = (nuint)Unsafe.AsPointer(ref stream) % (nuint)vectorBytes;
        return misaligned == 0 ? 0 : ((nuint)vectorBytes - misaligned) / (nuint)Unsafe.SizeOf<T>();
    }

    /// <summary>
    /// The output size from which dequantization streams its stores past the cache (16 MiB, beyond a core's share of
    /// L3): output that large is evicted before anyone reads it, and streaming saves reading every line before it is
    /// written. The benchmarks show it: dequantizing a 64 MiB weight takes about 0.7x the time of copying it with
    /// ordinary stores, about 0.5x with streaming ones.
    /// </summary>
    internal const long NonTemporalBytes = 16L << 20;

    internal static bool UseNonTemporalStores(long destinationBytes) => destinationBytes >= NonTemporalBytes;

    /// <summary>Streaming stores are weakly ordered: one fence after the last of them, before anyone else may read the data.</summary>
    internal static void FenceNonTemporalStores(bool nonTemporal)
    {
        if (nonTemporal)
        {
            Thread.MemoryBarrier();
        }
    }

    /// <summary>
    /// Asks for the cache line holding element <paramref name="index"/> of <paramref name="stream"/> (x86; elsewhere
    /// nothing). Prefetches never fault, so the index may run past the end of the data: the address is computed from an
    /// unmanaged pointer, never a managed reference past the end, and a stale address after a GC move only wastes the prefetch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void PrefetchLine(ref float stream, nuint index)
    {
        if (Sse.IsSupported)
        {
            Sse.Prefetch0((float*)Unsafe.AsPointer(ref stream) + index);
        }
    }
}
