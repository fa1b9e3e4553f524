namespace Quantization.Tests.SafeTensors;

public sealed class SafeTensorsRoundTripTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("safetensors-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void EveryDataType_RoundTrips_ZeroCopy()
    {
        Random random = new(1);
        (SafeTensorDescriptor Descriptor, byte[] Bytes)[] tensors = [.. Enum.GetValues<SafeTensorDataType>().Select((type, i) =>
        {
            long[] shape = i % 3 == 0 ? [] : i % 3 == 1 ? [3, 5] : [2, 0, 4];
            byte[] bytes = new byte[SafeTensorsHeaderBytes(type, shape)];
            random.NextBytes(bytes);
            return (new SafeTensorDescriptor($"layer.{i}.{type}", type, shape), bytes);
        })];
        string path = Path.Combine(_directory, "all.safetensors");
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(path, tensors.Select(t => t.Descriptor), new Dictionary<string, string> { ["format"] = "pt" }))
        {
            // Bytes may arrive in any pieces, across tensor boundaries.
            byte[] all = [.. tensors.SelectMany(t => t.Bytes)];
            for (int start = 0; start < all.Length; start += 7)
            {
                writer.Write(all.AsSpan(start, Math.Min(7, all.Length - start)));
            }

            Assert.Null(writer.CurrentTensor);
            writer.Commit();
        }

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(tensors.Length, file.Tensors.Count);
        foreach ((SafeTensorDescriptor descriptor, byte[] bytes) in tensors)
        {
            SafeTensorInfo info = file[descriptor.Name];
            Assert.Equal(descriptor.DataType, info.DataType);
            Assert.Equal(descriptor.Shape, info.Shape);
            Assert.Equal(bytes, file.GetBytes(descriptor.Name).ToArray());
        }

        Assert.Empty(Directory.GetFiles(_directory, "*.tmp", SearchOption.AllDirectories));
        Assert.Empty(Directory.GetFiles(_directory, ".*"));
    }

    [Fact]
    public void AfterDispose_EveryAccessorThrowsObjectDisposed_AndPinnedMemoryStaysReadable()
    {
        string path = Path.Combine(_directory, "one.safetensors");
        float[] values = [1.5f, -2, 3.25f, 8];
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(path, [new SafeTensorDescriptor("w", SafeTensorDataType.Float32, [2, 2])]))
        {
            writer.Write<float>(values);
            writer.Commit();
        }

        SafeTensorsFile file = SafeTensorsFile.Open(path);
        SafeTensorInfo info = file["w"];
        ReadOnlyMemory<byte> memory = file.GetMemory("w");
        ReadOnlyMemory<byte> pinnedMemory = file.GetMemory("w");
        Assert.Equal(values, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(memory.Span).ToArray());
        System.Buffers.MemoryHandle pin = pinnedMemory.Pin();
        file.Dispose();

        Assert.Throws<ObjectDisposedException>(() => file.GetBytes("w").Length);
        Assert.Throws<ObjectDisposedException>(() => file.GetBytes(info, 0, 4).Length);
        Assert.Throws<ObjectDisposedException>(() => file.GetSpan<float>("w").Length);
        Assert.Throws<ObjectDisposedException>(() => file.ReadBytes(info, 0, new byte[4]));
        Assert.Throws<ObjectDisposedException>(() => file.ReadSingles("w"));
        Assert.Throws<ObjectDisposedException>(() => file.ReadSingles(info, 0, new float[4]));
        Assert.Throws<ObjectDisposedException>(() => file.GetMemory("w"));

        // Memory handed out before Dispose is checked each time a span is taken from it, instead of reading unmapped pages.
        Assert.Throws<ObjectDisposedException>(() => memory.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => memory.Pin());

        // A pin taken before Dispose keeps the mapping until it is released.
        unsafe
        {
            Assert.Equal(values, new ReadOnlySpan<float>(pin.Pointer, values.Length).ToArray());
        }

        pin.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pinnedMemory.Span.Length);
    }

    [Fact]
    public void FloatTypes_ReadAsSingle()
    {
        float[] values = [0f, 1f, -2.5f, 65504f, 1e-3f, float.Epsilon, -0f, 3.14159f];
        Half[] halves = [.. values.Select(v => (Half)v)];
        ushort[] bfloats = [.. values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))];
        double[] doubles = [.. values.Select(v => (double)v)];
        string path = Path.Combine(_directory, "floats.safetensors");
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(path,
        [
            new("f16", SafeTensorDataType.Float16, [8]),
            new("bf16", SafeTensorDataType.BFloat16, [2, 4]),
            new("f32", SafeTensorDataType.Float32, [8]),
            new("f64", SafeTensorDataType.Float64, [8]),
            new("i8", SafeTensorDataType.Int8, [8]),
        ]))
        {
            writer.Write<Half>(halves);
            writer.Write<ushort>(bfloats);
            writer.Write<float>(values);
            writer.Write<double>(doubles);
            writer.Write<sbyte>(new sbyte[8]);
            writer.Commit();
        }

        using SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.Equal(halves.Select(h => (float)h), file.ReadSingles("f16"));
        Assert.Equal(bfloats.Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16)), file.ReadSingles("bf16"));
        Assert.Equal(values, file.ReadSingles("f32"));
        Assert.Equal(values, file.ReadSingles("f64"));
        Assert.Equal(halves, file.GetSpan<Half>("f16").ToArray());
        float[] part = new float[3];
        file.ReadSingles(file["f32"], 2, part);
        Assert.Equal(values[2..5], part);
        Assert.Throws<NotSupportedException>(() => file.ReadSingles("i8"));
        Assert.Throws<ArgumentException>(() => file.GetSpan<float>("f16"));
        Assert.Throws<ArgumentOutOfRangeException>(() => file.ReadSingles(file["f32"], 6, part));
        Assert.Throws<KeyNotFoundException>(() => file["nope"]);
    }

    [Fact]
    public void Writer_RefusesBadTensors_AndLeavesNothingBehindUncommitted()
    {
        string path = Path.Combine(_directory, "w.safetensors");
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Create(path, [new("a", SafeTensorDataType.Int8, [1]), new("a", SafeTensorDataType.Int8, [1])]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Create(path, [new("__metadata__", SafeTensorDataType.Int8, [1])]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Create(path, [new("", SafeTensorDataType.Int8, [1])]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Create(path, [new("neg", SafeTensorDataType.Int8, [-1])]));
        Assert.Throws<ArgumentException>(() => SafeTensorsWriter.Create(path, [new("huge", SafeTensorDataType.Float64, [1L << 40, 1L << 30])]));

        File.WriteAllText(path, "previous");
        using (SafeTensorsWriter writer = SafeTensorsWriter.Create(path, [new("a", SafeTensorDataType.Float32, [4])]))
        {
            writer.Write<float>([1f, 2f]);
            Assert.Equal("a", writer.CurrentTensor);
            Assert.Throws<InvalidOperationException>(() => writer.Commit());
            Assert.Throws<InvalidOperationException>(() => writer.Write(new byte[9]));
        }

        Assert.Equal("previous", File.ReadAllText(path));
        Assert.Single(Directory.GetFiles(_directory));
    }

    [Fact]
    public void ShardedCheckpoint_OpensThroughItsIndex_AndChecksIt()
    {
        Dictionary<string, string> map = [];
        for (int shard = 0; shard < 3; shard++)
        {
            string name = SafeTensorsCheckpoint.ShardFileName(shard, 3);
            using SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(_directory, name), [new($"layers.{shard}.weight", SafeTensorDataType.Float32, [2, 2]), new($"layers.{shard}.bias", SafeTensorDataType.Float32, [2])]);
            writer.Write<float>([shard, 1, 2, 3, 4, 5]);
            writer.Commit();
            map[$"layers.{shard}.weight"] = name;
            map[$"layers.{shard}.bias"] = name;
        }

        Assert.Equal("model-00002-of-00003.safetensors", SafeTensorsCheckpoint.ShardFileName(1, 3));
        SafeTensorsCheckpoint.WriteIndex(Path.Combine(_directory, SafeTensorsCheckpoint.IndexFileName), map, 72);
        using (SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(_directory))
        {
            Assert.Equal(3, checkpoint.Files.Count);
            Assert.Equal(6, checkpoint.Tensors.Count());
            Assert.Equal(2f, checkpoint.FileOf("layers.2.weight").ReadSingles("layers.2.weight")[0]);
        }

        string index = Path.Combine(_directory, "bad.index.json");
        foreach ((string json, string problem) in new[]
        {
            ("""{"weight_map": {"x": "../model-00001-of-00003.safetensors"}}""", "not a file name"),
            ("""{"weight_map": {"layers.0.weight": "model-00001-of-00003.safetensors"}}""", "does not map"),
            ("""{"weight_map": {"layers.0.weight": "model-00001-of-00003.safetensors", "layers.0.bias": "model-00001-of-00003.safetensors", "ghost": "model-00001-of-00003.safetensors"}}""", "no shard holds"),
            ("""{"weight_map": {"layers.0.weight": 3}}""", "not a file name string"),
            ("""{"weights": {}}""", "weight_map"),
            ("""{"weight_map": {""", "not valid JSON"),
        })
        {
            File.WriteAllText(index, json);
            Assert.Contains(problem, Assert.Throws<InvalidDataException>(() => SafeTensorsCheckpoint.Open(index)).Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void IndexWithBadStringsOrShardNames_IsRefused()
    {
        // Found by fuzzing (fuzz/crashes/index): a lone surrogate escape failed with InvalidOperationException when the
        // name was read, and a NUL in a shard name with ArgumentException when the shard was opened.
        string index = Path.Combine(_directory, "fuzzed.index.json");
        foreach ((string json, string problem) in new[]
        {
            ("""{"weight_map": {"\udc00": "model-00001-of-00003.safetensors"}}""", "not valid UTF-16"),
            ("""{"weight_map": {"a": "\ud800"}}""", "not valid UTF-16"),
            ("""{"weight_map": {"a": "model\u0000.safetensors"}}""", "is not a file name"),
        })
        {
            File.WriteAllText(index, json);
            Assert.Contains(problem, Assert.Throws<InvalidDataException>(() => SafeTensorsCheckpoint.Open(index)).Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void IndexNamingAShardTooLongForTheFileSystem_IsAnIOExceptionNamingIt()
    {
        // Found by fuzzing (fuzz/crashes/index/shard-name-too-long.json): the documented IOException, with the shard's path.
        string shard = "model-0" + new string('e', 300) + ".safetensors";
        string index = Path.Combine(_directory, "long.index.json");
        File.WriteAllText(index, $$$"""{"weight_map": {"p": "{{{shard}}}"}}""");

        IOException e = Assert.Throws<PathTooLongException>(() => SafeTensorsCheckpoint.Open(index));
        Assert.Contains(shard, e.Message, StringComparison.Ordinal);
    }

    private static long SafeTensorsHeaderBytes(SafeTensorDataType type, long[] shape) => shape.Aggregate((long)type.ElementSize(), (a, b) => a * b);
}
