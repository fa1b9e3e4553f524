using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// One step of a dot product between a key row and a query row: widen <see cref="Count"/> key elements once, then
/// multiply-add them into the accumulators of every query head that shares the key.
/// </summary>
/// <typeparam name="TKey">The stored key element.</typeparam>
/// <typeparam name="TQuery">The query element.</typeparam>
/// <typeparam name="TWide">The widened keys of one step.</typeparam>
/// <typeparam name="TAcc">The accumulator of one query head.</typeparam>
/// <typeparam name="TResult">The dot product's type.</typeparam>
internal interface IDotOperator<TKey, TQuery, TWide, TAcc, TResult>
    where TResult : INumberBase<TResult>
{
    /// <summary>Gets the elements one step covers.</summary>
    static abstract int Count { get; }

    /// <summary>Gets whether this machine runs the operator in hardware.</summary>
    static abstract bool IsSupported { get; }

    static abstract TAcc Zero { get; }

    static abstract TWide Widen(ref TKey key, nuint i);

    static abstract TAcc MultiplyAdd(TAcc acc, TWide key, ref TQuery query, nuint i);

    static abstract TResult Sum(TAcc acc);

    /// <summary>Sums four accumulators at once: one reduction tree for the four query heads of a step.</summary>
    static abstract (TResult A, TResult B, TResult C, TResult D) Sum4(TAcc a, TAcc b, TAcc c, TAcc d);
}

/// <summary>
/// One step of a weighted sum of value rows, <c>output += w * v</c>: widen <see cref="Count"/> value elements to float
/// once, then multiply-add them into the output of every query head that shares the value row.
/// </summary>
/// <typeparam name="TValue">The stored value element (sbyte or float).</typeparam>
/// <typeparam name="TVector">A vector of <see cref="Count"/> floats.</typeparam>
internal interface IWeightedSumOperator<TValue, TVector>
{
    static abstract int Count { get; }

    static abstract bool IsSupported { get; }

    static abstract TVector Widen(ref TValue value, nuint i);

    static abstract TVector Load(ref float output, nuint i);

    static abstract void Store(TVector x, ref float output, nuint i);

    static abstract TVector MultiplyAdd(TVector acc, TVector x, float weight);
}

/// <summary>Helpers of the four-way reductions.</summary>
internal static class Reductions
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (T A, T B, T C, T D) Elements<T>(Vector128<T> sums) => (sums.ToScalar(), sums.GetElement(1), sums.GetElement(2), sums.GetElement(3));
}

/// <summary>Loads of a few sbytes into the low lanes of a vector, never reading past them.</summary>
internal static class SByteLoads
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<sbyte> Load16(ref sbyte source, nuint i) => Vector128.LoadUnsafe(ref source, i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<sbyte> Load8(ref sbyte source, nuint i) =>
        Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<long>(ref Unsafe.As<sbyte, byte>(ref Unsafe.Add(ref source, i)))).AsSByte();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<sbyte> Load4(ref sbyte source, nuint i) =>
        Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<int>(ref Unsafe.As<sbyte, byte>(ref Unsafe.Add(ref source, i)))).AsSByte();
}

/// <summary>16 float keys a step.</summary>
internal readonly struct FloatDot512 : IDotOperator<float, float, Vector512<float>, Vector512<float>, float>
{
    public static int Count => 16;

    public static bool IsSupported => Vector512.IsHardwareAccelerated;

    public static Vector512<float> Zero => Vector512<float>.Zero;

    public static Vector512<float> Widen(ref float key, nuint i) => Vector512.LoadUnsafe(ref key, i);

    public static Vector512<float> MultiplyAdd(Vector512<float> acc, Vector512<float> key, ref float query, nuint i) =>
        Vector512.FusedMultiplyAdd(key, Vector512.LoadUnsafe(ref query, i), acc);

    public static float Sum(Vector512<float> acc) => Vector512.Sum(acc);

    public static (float A, float B, float C, float D) Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) =>
        FloatDot256.Sum4(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper(), c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper());
}

/// <summary>8 float keys a step.</summary>
internal readonly struct FloatDot256 : IDotOperator<float, float, Vector256<float>, Vector256<float>, float>
{
    public static int Count => 8;

    public static bool IsSupported => Vector256.IsHardwareAccelerated;

    public static Vector256<float> Zero => Vector256<float>.Zero;

    public static Vector256<float> Widen(ref float key, nuint i) => Vector256.LoadUnsafe(ref key, i);

    public static Vector256<float> MultiplyAdd(Vector256<float> acc, Vector256<float> key, ref float query, nuint i) =>
        Vector256.FusedMultiplyAdd(key, Vector256.LoadUnsafe(ref query, i), acc);

    public static float Sum(Vector256<float> acc) => Vector256.Sum(acc);

    public static (float A, float B, float C, float D) Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        if (!Avx.IsSupported)
        {
            return (Sum(a), Sum(b), Sum(c), Sum(d));
        }

        Vector256<float> sums = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));
        return Reductions.Elements(sums.GetLower() + sums.GetUpper());
    }
}

/// <summary>4 float keys a step.</summary>
internal readonly struct FloatDot128 : IDotOperator<float, float, Vector128<float>, Vector128<float>, float>
{
    public static int Count => 4;

    public static bool IsSupported => Vector128.IsHardwareAccelerated;

    public static Vector128<float> Zero => Vector128<float>.Zero;

    public static Vector128<float> Widen(ref float key, nuint i) => Vector128.LoadUnsafe(ref key, i);

    public static Vector128<float> MultiplyAdd(Vector128<float> acc, Vector128<float> key, ref float query, nuint i) =>
        Vector128.FusedMultiplyAdd(key, Vector128.LoadUnsafe(ref query, i), acc);

    public static float Sum(Vector128<float> acc) => Vector128.Sum(acc);

    public static (float A, float B, float C, float D) Sum4(Vector128<float> a, Vector128<float> b, Vector128<float> c, Vector128<float> d) =>
        Sse3.IsSupported ? Reductions.Elements(Sse3.HorizontalAdd(Sse3.HorizontalAdd(a, b), Sse3.HorizontalAdd(c, d))) : (Sum(a), Sum(b), Sum(c), Sum(d));
}

/// <summary>One float key a step.</summary>
internal readonly struct FloatDotScalar : IDotOperator<float, float, float, float, float>
{
    public static int Count => 1;

    public static bool IsSupported => true;

    public static float Zero => 0f;

    public static float Widen(ref float key, nuint i) => Unsafe.Add(ref key, i);

    public static float MultiplyAdd(float acc, float key, ref float query, nuint i) => MathF.FusedMultiplyAdd(key, Unsafe.Add(ref query, i), acc);

    public static float Sum(float acc) => acc;

    public static (float A, float B, float C, float D) Sum4(float a, float b, float c, float d) => (a, b, c, d);
}

// Int8 values widened to float: vpmovsxbd sign-extends 16 (8, 4) bytes to int32 lanes in one instruction, straight
// from memory; the portable route takes two widening steps.

/// <summary>16 int8 values a step.</summary>
internal readonly struct Int8WeightedSum512 : IWeightedSumOperator<sbyte, Vector512<float>>
{
    public static int Count => 16;

    public static bool IsSupported => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(ref sbyte value, nuint i) => Vector512.ConvertToSingle(Avx512F.ConvertToVector512Int32(SByteLoads.Load16(ref value, i)));

    public static Vector512<float> Load(ref float output, nuint i) => Vector512.LoadUnsafe(ref output, i);

    public static void Store(Vector512<float> x, ref float output, nuint i) => x.StoreUnsafe(ref output, i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MultiplyAdd(Vector512<float> acc, Vector512<float> x, float weight) => Vector512.FusedMultiplyAdd(x, Vector512.Create(weight), acc);
}

/// <summary>8 int8 values a step.</summary>
internal readonly struct Int8WeightedSum256 : IWeightedSumOperator<sbyte, Vector256<float>>
{
    public static int Count => 8;

    public static bool IsSupported => Vector256.IsHardwareAccelerated && Avx2.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(ref sbyte value, nuint i) => Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(SByteLoads.Load8(ref value, i)));

    public static Vector256<float> Load(ref float output, nuint i) => Vector256.LoadUnsafe(ref output, i);

    public static void Store(Vector256<float> x, ref float output, nuint i) => x.StoreUnsafe(ref output, i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MultiplyAdd(Vector256<float> acc, Vector256<float> x, float weight) => Vector256.FusedMultiplyAdd(x, Vector256.Create(weight), acc);
}

/// <summary>4 int8 values a step.</summary>
internal readonly struct Int8WeightedSum128 : IWeightedSumOperator<sbyte, Vector128<float>>
{
    public static int Count => 4;

    public static bool IsSupported => Vector128.IsHardwareAccelerated && Sse41.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Widen(ref sbyte value, nuint i) => Vector128.ConvertToSingle(Sse41.ConvertToVector128Int32(SByteLoads.Load4(ref value, i)));

    public static Vector128<float> Load(ref float output, nuint i) => Vector128.LoadUnsafe(ref output, i);

    public static void Store(Vector128<float> x, ref float output, nuint i) => x.StoreUnsafe(ref output, i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MultiplyAdd(Vector128<float> acc, Vector128<float> x, float weight) => Vector128.FusedMultiplyAdd(x, Vector128.Create(weight), acc);
}

/// <summary>One int8 value a step: the scalar path and every vector path's tail.</summary>
internal readonly struct Int8WeightedSumScalar : IWeightedSumOperator<sbyte, float>
{
    public static int Count => 1;

    public static bool IsSupported => true;

    public static float Widen(ref sbyte value, nuint i) => Unsafe.Add(ref value, i);

    public static float Load(ref float output, nuint i) => Unsafe.Add(ref output, i);

    public static void Store(float x, ref float output, nuint i) => Unsafe.Add(ref output, i) = x;

    public static float MultiplyAdd(float acc, float x, float weight) => MathF.FusedMultiplyAdd(x, weight, acc);
}

/// <summary>16 float values a step.</summary>
internal readonly struct FloatWeightedSum512 : IWeightedSumOperator<float, Vector512<float>>
{
    public static int Count => 16;

    public static bool IsSupported => Vector512.IsHardwareAccelerated;

    public static Vector512<float> Widen(ref float value, nuint i) => Vector512.LoadUnsafe(ref value, i);

    public static Vector512<float> Load(ref float output, nuint i) => Vector512.LoadUnsafe(ref output, i);

    public static void Store(Vector512<float> x, ref float output, nuint i) => x.StoreUnsafe(ref output, i);

    public static Vector512<float> MultiplyAdd(Vector512<float> acc, Vector512<float> x, float weight) => Vector512.FusedMultiplyAdd(x, Vector512.Create(weight), acc);
}

/// <summary>8 float values a step.</summary>
internal readonly struct FloatWeightedSum256 : IWeightedSumOperator<float, Vector256<float>>
{
    public static int Count => 8;

    public static bool IsSupported => Vector256.IsHardwareAccelerated;

    public static Vector256<float> Widen(ref float value, nuint i) => Vector256.LoadUnsafe(ref value, i);

    public static Vector256<float> Load(ref float output, nuint i) => Vector256.LoadUnsafe(ref output, i);

    public static void Store(Vector256<float> x, ref float output, nuint i) => x.StoreUnsafe(ref output, i);

    public static Vector256<float> MultiplyAdd(Vector256<float> acc, Vector256<float> x, float weight) => Vector256.FusedMultiplyAdd(x, Vector256.Create(weight), acc);
}

/// <summary>4 float values a step.</summary>
internal readonly struct FloatWeightedSum128 : IWeightedSumOperator<float, Vector128<float>>
{
    public static int Count => 4;

    public static bool IsSupported => Vector128.IsHardwareAccelerated;

    public static Vector128<float> Widen(ref float value, nuint i) => Vector128.LoadUnsafe(ref value, i);

    public static Vector128<float> Load(ref float output, nuint i) => Vector128.LoadUnsafe(ref output, i);

    public static void Store(Vector128<float> x, ref float output, nuint i) => x.StoreUnsafe(ref output, i);

    public static Vector128<float> MultiplyAdd(Vector128<float> acc, Vector128<float> x, float weight) => Vector128.FusedMultiplyAdd(x, Vector128.Create(weight), acc);
}

/// <summary>One float value a step.</summary>
internal readonly struct FloatWeightedSumScalar : IWeightedSumOperator<float, float>
{
    public static int Count => 1;

    public static bool IsSupported => true;

    public static float Widen(ref float value, nuint i) => Unsafe.Add(ref value, i);

    public static float Load(ref float output, nuint i) => Unsafe.Add(ref output, i);

    public static void Store(float x, ref float output, nuint i) => Unsafe.Add(ref output, i) = x;

    public static float MultiplyAdd(float acc, float x, float weight) => MathF.FusedMultiplyAdd(x, weight, acc);
}
