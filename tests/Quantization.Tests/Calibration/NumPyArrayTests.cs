namespace Quantization.Tests.Calibration;

public class NumPyArrayTests
{
    [Fact]
    public void Create_MapsDotNetTypes_AndChecksTheShape()
    {
        Assert.Equal(NpyDataType.Int64, NumPyArray.Create<long>([1, 2, 3, 4], 2, 2).DataType);
        Assert.Equal(NpyDataType.Float16, NumPyArray.DataTypeOf<Half>());
        Assert.Equal(NpyDataType.Bool, NumPyArray.DataTypeOf<bool>());
        Assert.Throws<NotSupportedException>(() => NumPyArray.DataTypeOf<decimal>());
        Assert.Throws<ArgumentException>(() => NumPyArray.Create<long>([1, 2, 3], 2, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => NumPyArray.Create<long>([], -1));
        Assert.Throws<ArgumentException>(() => new NumPyArray(NpyDataType.Bool, [2], [1, 2]));
        Assert.Throws<ArgumentException>(() => new NumPyArray(NpyDataType.Float32, [int.MaxValue, 2], []));
        NumPyArray scalar = NumPyArray.Create<int>([42]);
        Assert.Empty(scalar.Shape);
        Assert.Equal(1, scalar.Length);
        Assert.Equal("Int32 ()", scalar.ToString());
        Assert.Equal(0, NumPyArray.Create<float>([], 3, 0).Length);
    }

    [Fact]
    public void TypedAccess_ChecksTheType()
    {
        NumPyArray ids = NumPyArray.Create<long>([101, -5], 2);
        Assert.Equal([101L, -5], ids.ToArray<long>());
        Assert.Contains("Int64", Assert.Throws<InvalidOperationException>(() => ids.ToArray<int>()).Message, StringComparison.Ordinal);
        Assert.Equal([101f, -5f], ids.ToSingleArray());
        Assert.Equal([16777216f], NumPyArray.Create<long>([16777217]).ToSingleArray()); // ties to even, from the integer directly
        Assert.Equal([1f, 0f], NumPyArray.Create<bool>([true, false], 2).ToSingleArray());
    }

    [Theory]
    [InlineData(NpyDataType.Int32, NpyDataType.Int64, true)]
    [InlineData(NpyDataType.UInt32, NpyDataType.Int64, true)]
    [InlineData(NpyDataType.UInt32, NpyDataType.Int32, false)]
    [InlineData(NpyDataType.Int8, NpyDataType.UInt64, false)]
    [InlineData(NpyDataType.UInt8, NpyDataType.UInt64, true)]
    [InlineData(NpyDataType.Int64, NpyDataType.Int32, false)]
    [InlineData(NpyDataType.Int64, NpyDataType.Float64, false)]
    [InlineData(NpyDataType.Int32, NpyDataType.Float64, true)]
    [InlineData(NpyDataType.Int32, NpyDataType.Float32, false)]
    [InlineData(NpyDataType.Int16, NpyDataType.Float32, true)]
    [InlineData(NpyDataType.UInt8, NpyDataType.Float16, true)]
    [InlineData(NpyDataType.Int16, NpyDataType.Float16, false)]
    [InlineData(NpyDataType.Float64, NpyDataType.Float32, true)]
    [InlineData(NpyDataType.Float32, NpyDataType.Float16, true)]
    [InlineData(NpyDataType.Float32, NpyDataType.Int64, false)]
    [InlineData(NpyDataType.Bool, NpyDataType.Int64, false)]
    [InlineData(NpyDataType.Int64, NpyDataType.Bool, false)]
    [InlineData(NpyDataType.Bool, NpyDataType.Bool, true)]
    public void CanConvert_IsExactOrFloatRounding(NpyDataType from, NpyDataType to, bool expected) =>
        Assert.Equal(expected, NumPyArray.CanConvert(from, to));

    [Fact]
    public void ConvertTo_ValuesAndShape()
    {
        NumPyArray ints = NumPyArray.Create<int>([int.MinValue, -1, 0, int.MaxValue], 2, 2);
        NumPyArray longs = ints.ConvertTo(NpyDataType.Int64);
        Assert.Equal([(long)int.MinValue, -1, 0, int.MaxValue], longs.ToArray<long>());
        Assert.Equal([2, 2], longs.Shape);
        Assert.Same(ints, ints.ConvertTo(NpyDataType.Int32));
        Assert.Equal([0.1f, 0f, float.PositiveInfinity], NumPyArray.Create<double>([0.1, 1e-46, 1e300], 3).ConvertTo(NpyDataType.Float32).ToArray<float>());
        Assert.Equal([(Half)0.1f, Half.PositiveInfinity], NumPyArray.Create<float>([0.1f, 70000f], 2).ConvertTo(NpyDataType.Float16).ToArray<Half>());
        Assert.Equal([255f, 0f], NumPyArray.Create<byte>([255, 0], 2).ConvertTo(NpyDataType.Float32).ToArray<float>());
        Assert.Equal([ushort.MaxValue], NumPyArray.Create<ushort>([ushort.MaxValue], 1).ConvertTo(NpyDataType.UInt64).ToArray<ulong>().Select(v => (ushort)v));
        Assert.Throws<ArgumentException>(() => NumPyArray.Create<float>([1.5f], 1).ConvertTo(NpyDataType.Int64));
    }
}
